"""``BinaryClassifier``: the scikit-learn face of binclf's models and trainer."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from binclf import runtime
from binclf.nn.models import build_model, model_config
from binclf.train.trainer import TrainConfig, Trainer, predict_logits

_DEFAULT = TrainConfig  # the training settings' defaults, stated once in binclf.train.trainer

__all__ = ["BinaryClassifier"]

# Early stopping needs a validation split with both classes in it; below this
# many rows per class the estimator trains for max_epochs without one.
_MIN_ROWS_PER_CLASS_FOR_VALIDATION = 10


class BinaryClassifier(ClassifierMixin, BaseEstimator):
    """A PyTorch binary classifier with scikit-learn's estimator API.

    Features are standardised with the training mean and standard deviation,
    a single-logit model (``"mlp"``, ``"ple_mlp"``: the MLP with piecewise-linear
    encodings of every feature, or ``"logistic"``) is trained with AdamW on
    BCE with logits (or focal / hinge loss), early-stopped on a stratified
    ``validation_fraction`` of the training rows, and its output bias starts at
    ``logit(prior)``.

    ``y`` may hold any two labels (0/1, -1/1, "no"/"yes", booleans); ``classes_``
    is sorted and ``classes_[1]`` is the positive class, as in scikit-learn.
    ``decision_function`` returns the logits ``(n,)``; ``predict_proba`` returns
    ``(n, 2)``. ``batch_size="auto"`` is 512, halved on small tables until an
    epoch has at least about 8 steps.
    """

    def __init__(
        self,
        *,
        model: str = "mlp",
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        batchnorm: bool = True,
        loss: str = _DEFAULT.loss,
        pos_weight: float | str | None = _DEFAULT.pos_weight,
        focal_gamma: float = _DEFAULT.focal_gamma,
        focal_alpha: float | None = _DEFAULT.focal_alpha,
        sampler: str | None = _DEFAULT.sampler,
        lr: float = _DEFAULT.lr,
        weight_decay: float = _DEFAULT.weight_decay,
        batch_size: int | str = "auto",
        max_epochs: int = _DEFAULT.max_epochs,
        patience: int = _DEFAULT.patience,
        lr_schedule: str | None = _DEFAULT.lr_schedule,
        validation_fraction: float = 0.1,
        random_state: int | None = None,
        device: str = _DEFAULT.device,
        verbose: bool = False,
    ) -> None:
        self.model = model
        self.hidden = hidden
        self.dropout = dropout
        self.batchnorm = batchnorm
        self.loss = loss
        self.pos_weight = pos_weight
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.sampler = sampler
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.lr_schedule = lr_schedule
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.non_deterministic = False
        return tags

    # -- fitting ----------------------------------------------------------------
    @runtime.entry_point("train")  # process knobs set here and restored on return (binclf.runtime)
    def fit(self, X, y, sample_weight=None) -> "BinaryClassifier":
        """Fit on ``X`` (n, d) numbers and ``y`` (n,) with exactly two labels.

        Parameters
        ----------
        X : array-like of shape (n, d)
            Numeric features.
        y : array-like of shape (n,)
            Exactly two distinct labels; ``classes_[1]`` is the positive one.
        sample_weight : array-like of shape (n,), optional

        Returns
        -------
        BinaryClassifier
            ``self``, fitted.
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=False)
        check_classification_targets(y)
        kind = type_of_target(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) != 2:
            if len(self.classes_) == 1:
                raise ValueError(
                f"BinaryClassifier needs two classes in y, got 1 class: {self.classes_[0]!r}"
            )
            raise ValueError(
                f"Only binary classification is supported: y has {len(self.classes_)} classes "
                f"({kind}): {list(self.classes_)[:10]}"
            )
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        seed = self._seed()

        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        Xs = self._standardise(X)
        y01 = y_enc.astype(np.float32)

        train_idx, valid_idx = self._split(y01, seed)
        net_config = model_config(
            self.model, n_features=X.shape[1], hidden=self.hidden, dropout=self.dropout, batchnorm=self.batchnorm,
            n_numeric=X.shape[1],
        )
        self.model_ = build_model(self.model, seed=seed, **net_config)
        config = TrainConfig.from_settings(self, n_train=len(train_idx), seed=seed)
        w = sample_weight.astype(np.float32)
        has_weights = not np.all(w == 1.0)
        valid = {}
        if valid_idx is not None:
            valid = dict(
                X_valid=Xs[valid_idx],
                y_valid=y01[valid_idx],
                sample_weight_valid=w[valid_idx] if has_weights else None,
            )
        self.trainer_ = Trainer(config).fit(
            self.model_,
            Xs[train_idx],
            y01[train_idx],
            sample_weight=w[train_idx] if has_weights else None,
            **valid,
        )
        self.history_ = self.trainer_.history_
        self.n_epochs_ = len(self.history_)
        return self

    def _seed(self) -> int:
        if self.random_state is None:
            return int(np.random.randint(0, 2**31 - 1))
        if isinstance(self.random_state, np.random.RandomState):
            return int(self.random_state.randint(0, 2**31 - 1))
        return int(self.random_state)

    def _split(self, y01: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        idx = np.arange(len(y01))
        counts = np.bincount(y01.astype(int), minlength=2)
        n_valid_min = counts.min() * self.validation_fraction
        if not self.validation_fraction or n_valid_min < 1 or counts.min() < _MIN_ROWS_PER_CLASS_FOR_VALIDATION:
            return idx, None
        train_idx, valid_idx = train_test_split(
            idx, test_size=self.validation_fraction, stratify=y01, random_state=seed
        )
        return np.sort(train_idx), np.sort(valid_idx)

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean_) / self.scale_).astype(np.float32)

    # -- prediction ---------------------------------------------------------------
    @runtime.entry_point("predict")
    def decision_function(self, X) -> np.ndarray:
        """Logits ``(n,)``: positive means ``classes_[1]`` is more likely.

        Parameters
        ----------
        X : array-like of shape (n, d)

        Returns
        -------
        ndarray of shape (n,)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        # In float64, so that a row's logit does not depend on which other rows
        # share its batch (float32 BLAS kernels differ by batch shape).
        model64 = copy.deepcopy(self.model_).double()
        Xs = torch.from_numpy((X - self.mean_) / self.scale_)
        return predict_logits(model64, Xs, dtype=torch.float64).numpy()

    @runtime.entry_point("predict")
    def predict_proba(self, X) -> np.ndarray:
        """Probabilities ``(n, 2)``: columns follow ``classes_``."""
        z = torch.from_numpy(self.decision_function(X))
        p = torch.sigmoid(z).numpy()
        return np.column_stack([1.0 - p, p])

    def predict_log_proba(self, X) -> np.ndarray:
        """Log-probabilities ``(n, 2)``, computed stably from the logits."""
        z = torch.from_numpy(self.decision_function(X))
        return torch.stack([torch.nn.functional.logsigmoid(-z), torch.nn.functional.logsigmoid(z)], 1).numpy()

    def predict(self, X) -> np.ndarray:
        """The label of ``classes_`` with the higher probability (threshold 0.5 on the positive)."""
        z = self.decision_function(X)
        return self.classes_[(z > 0).astype(int)]
