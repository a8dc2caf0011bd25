"""Single-logit models: every ``forward`` returns logits of shape ``(n,)``.

No model ends in a sigmoid: probabilities are read out (and calibrated) in
:class:`binclf.Predictor`. Each model keeps its final ``nn.Linear(d, 1)`` as
``self.output`` so that :func:`init_output_bias` can start its bias at
``logit(prior)``.
"""

from binclf.nn.models.base import build_model, init_output_bias, model_config, model_names
from binclf.nn.models.cnn import ImageCNN
from binclf.nn.models.logistic import LogisticModel
from binclf.nn.models.mlp import MLP
from binclf.nn.models.ple import PLEMLP
from binclf.nn.models.tabm import TabM

__all__ = [
    "ImageCNN", "LogisticModel", "MLP", "PLEMLP", "TabM", "build_model", "init_output_bias", "model_config", "model_names",
]
