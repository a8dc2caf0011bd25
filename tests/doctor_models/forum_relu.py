"""The forum model: a ReLU after the last Linear, then a sigmoid, trained with BCELoss.

``binclf doctor`` must report ``nonneg-output`` (error): sigmoid(relu(z)) >= 0.5,
so the model never predicts the negative class.
"""

import torch
import torch.nn.functional as F
from torch import nn


class ForumNet(nn.Module):
    def __init__(self, input_size: int, hidden: int = 32) -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden)
        self.fc_last = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.fc1(x))
        out = F.relu(self.fc_last(out))  # the bug: probabilities never below 0.5
        return torch.sigmoid(out).squeeze(-1)


criterion = nn.BCELoss()


def make_model(n_features: int) -> nn.Module:
    """A factory, for ``forum_relu.py:make_model``."""
    return ForumNet(n_features)
