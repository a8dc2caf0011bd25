"""Tests for binclf.train.pipeline.train_table: checks of the raw table, before any split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from binclf.errors import DataError
from binclf.train.pipeline import TrainOptions, train_table

OPTIONS = TrainOptions(target="y", model="logistic", max_epochs=2, n_boot=10, drop_missing_target=True)


def frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    df["y"] = np.where(df["a"] > 0, "yes", "no")
    return df


def test_infinite_value_named_by_its_file_row_before_the_split():
    """inf is an error naming the file row, even with rows dropped before it and the rows shuffled by splits."""
    df = frame()
    df.loc[[2, 5], "y"] = None  # dropped: file rows shift by two for later rows
    df.loc[40, "b"] = np.inf
    with pytest.raises(DataError, match="data.csv: column 'b' holds an infinite value at row 42"):
        train_table(df, OPTIONS, source="data.csv")


def test_infinite_value_in_a_valid_file():
    """A --valid table with inf is named as such."""
    valid = frame(30)
    valid.loc[7, "a"] = -np.inf
    with pytest.raises(DataError, match="--valid file: column 'a' holds an infinite value at row 9"):
        train_table(frame(), OPTIONS, valid_df=valid)


def test_trains_with_dropped_targets_and_reports_split_sizes():
    """Rows with a missing target are dropped with a notice; the summary records the split sizes."""
    df = frame()
    df.loc[[2, 5], "y"] = None
    result = train_table(df, OPTIONS)
    assert any("2 row(s) with a missing 'y' dropped (row(s) 4, 7)" in n for n in result.notices)
    assert sum(result.summary["split_rows"].values()) == 58


def test_train_options_keep_their_fields_and_validate_the_shared_settings_at_once():
    """The settings TrainOptions shares with TrainConfig keep their names, defaults and JSON; bad ones fail early."""
    from binclf.errors import ConfigError
    from binclf.train.trainer import TrainConfig

    options = TrainOptions(target="y", lr=0.01, patience=3, sampler="balanced", pos_weight="balanced", seed=7)
    assert TrainOptions.from_dict(options.to_dict()) == options
    assert sorted(options.to_dict()) == [
        "abstain_precision", "batch_size", "calibration", "categorical", "device", "drop", "drop_missing_target",
        "dropout", "folds", "hidden", "linear_member", "loss", "lr", "max_epochs", "model", "n_boot", "neural_member",
        "numeric", "numeric_scaling", "objective", "patience", "ple_bins", "pos_weight", "positive", "sampler",
        "seed", "target", "test_fraction", "text", "text_encoder", "valid_fraction", "weight_decay",
    ]
    config = TrainConfig.from_settings(options, n_train=10_000)
    assert (config.lr, config.patience, config.sampler, config.seed, config.batch_size) == (0.01, 3, "balanced", 7, 512)
    with pytest.raises(ConfigError, match="lr must be a positive number, got 0"):
        TrainOptions(target="y", lr=0)


@pytest.mark.parametrize("model", ["logistic", "auto"])
def test_a_valid_or_test_file_missing_a_feature_column_is_a_data_error(model):
    """A --valid or --test table without a training column fails with the transform's one-line error."""
    options = TrainOptions(target="y", model=model, max_epochs=1, n_boot=10)
    with pytest.raises(DataError, match=r"^--valid file: 1 feature column\(s\) the model was trained on are missing: 'b'"):
        train_table(frame(), options, valid_df=frame(30).drop(columns="b"), test_df=frame(30))
    with pytest.raises(DataError, match=r"^--test file: 1 feature column\(s\) the model was trained on are missing: 'b'"):
        train_table(frame(), options, test_df=frame(30).drop(columns="b"))
