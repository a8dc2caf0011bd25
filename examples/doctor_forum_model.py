"""The forum model, for trying ``binclf doctor``.

"My model ends in ``F.relu(self.fc_last(out))`` and then ``torch.sigmoid``; why
does it never predict the negative class?" Because sigmoid(z) >= 0.5 for every
z >= 0. Ask the doctor::

    binclf doctor examples/doctor_forum_model.py:ForumNet \\
        --data src/binclf/datasets/oj.csv --target Purchase \\
        --loss examples/doctor_forum_model.py:criterion

or run this file (``python examples/doctor_forum_model.py``) to see the same
report from Python. The fix: return ``self.fc_last(out).squeeze(-1)`` (a logit)
and train with ``nn.BCEWithLogitsLoss()``.
"""

import torch
import torch.nn.functional as F
from torch import nn


class ForumNet(nn.Module):
    """Linear -> ReLU -> Linear -> ReLU (the bug) -> sigmoid; (n, n_features) -> (n,)."""

    def __init__(self, n_features: int, hidden: int = 32) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_features, hidden)
        self.fc_last = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.fc1(x))
        out = F.relu(self.fc_last(out))  # the bug: delete this ReLU (and the sigmoid)
        return torch.sigmoid(out).squeeze(-1)


criterion = nn.BCELoss()


if __name__ == "__main__":
    from binclf.doctor import check

    torch.manual_seed(0)
    x = torch.randn(512, 8)
    y = (x[:, 0] + 0.5 * torch.randn(512) > 0).float()
    report = check(ForumNet(8), criterion, x, y)
    print(report)
    raise SystemExit(1 if report.has_errors else 0)
