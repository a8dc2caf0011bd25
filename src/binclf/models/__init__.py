"""Single-logit models: every ``forward`` returns logits of shape ``(n,)``.

No model ends in a sigmoid: probabilities are read out (and calibrated) in
:class:`binclf.Predictor`. Each model keeps its final ``nn.Linear(d, 1)`` as
``self.output`` so that :func:`init_output_bias` can start its bias at
``logit(prior)``.
"""

from binclf.models.base import build_model, init_output_bias, model_names
from binclf.models.logistic import LogisticModel
from binclf.models.mlp import MLP
from binclf.models.ple import PLEMLP
from binclf.models.tabm import TabM

__all__ = ["LogisticModel", "MLP", "PLEMLP", "TabM", "build_model", "init_output_bias", "model_names"]
