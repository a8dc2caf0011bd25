import torch
from torch import nn


class HotNet(nn.Module):
    """Scales its logit by 1e5: each Adam step (lr 1e-3) moves the logit by about 100."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.output = nn.Linear(n_features, 1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 100000.0 * self.output(x).squeeze(-1)
