"""Tests for binclf.doctor: each classic bug is found, correct models are left alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from binclf.doctor import FINDING_CODES, Finding, Report, check, load_object, run
from binclf.errors import ConfigError, DataError
from binclf.nn.models import MLP, LogisticModel, init_output_bias

DATA = Path(__file__).parent / "data"
MODELS = Path(__file__).parent / "doctor_models"
N, D = 512, 8


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The batches are tiny: extra intra-op threads only add overhead (and contention in CI)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- data and models


def make_batch(*, n: int = N, d: int = D, ratio: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised features; ``ratio`` negatives per positive (1.0: balanced)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    score = x[:, 0] + 0.5 * torch.randn(n, generator=g)
    cut = torch.quantile(score, 1.0 - 1.0 / (1.0 + ratio))
    return x, (score > cut).float()


def seeded(build):
    torch.manual_seed(0)
    return build()


class LogitNet(nn.Module):
    """The correct shape of a binary model: one logit per row, no final activation."""

    def __init__(self, d: int = D) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 32), nn.ReLU())
        self.output = nn.Linear(32, 1)

    def forward(self, x):
        return self.output(self.body(x)).squeeze(-1)


class ForumNet(nn.Module):
    """The forum model: Linear -> ReLU -> Linear, then F.relu(fc_last(out)) in forward."""

    def __init__(self, d: int = D, *, sigmoid: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, 32)
        self.fc_last = nn.Linear(32, 1)
        self.sigmoid = sigmoid

    def forward(self, x):
        out = F.relu(self.fc1(x))
        out = F.relu(self.fc_last(out))
        out = torch.sigmoid(out) if self.sigmoid else out
        return out.squeeze(-1)


class Tail(nn.Module):
    """LogitNet followed by a functional op (``torch.abs``, ``torch.sigmoid`` ...)."""

    def __init__(self, op, d: int = D) -> None:
        super().__init__()
        self.net = LogitNet(d)
        self.op = op

    def forward(self, x):
        return self.op(self.net(x))


class Column(nn.Module):
    """Returns ``(n, k)``: a final Linear(d, k) without the squeeze."""

    def __init__(self, k: int = 1, d: int = D) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 16)
        self.output = nn.Linear(16, k)

    def forward(self, x):
        return self.output(torch.relu(self.fc(x)))


def sequential(*tail: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, 1), *tail, nn.Flatten(0))


def no_errors_or_warnings(report: Report) -> bool:
    return all(f.severity == "hint" for f in report)


# --------------------------------------------------------------------------- 1. non-negative output


def test_forum_model_relu_then_sigmoid_with_bce_is_nonneg_output_error():
    x, y = make_batch()
    report = check(seeded(lambda: ForumNet(sigmoid=True)), nn.BCELoss(), x, y)
    f = report.get("nonneg-output")
    assert f is not None and f.severity == "error"
    assert "all 512 outputs are in [0.5, 1): min 0.5000" in f.observed
    assert "`fc_last`" in f.observed and "fc_last(out)" in f.fix
    assert report.has_errors


def test_forum_model_relu_logit_with_bce_with_logits_is_nonneg_output_error():
    x, y = make_batch()
    report = check(seeded(lambda: ForumNet(sigmoid=False)), nn.BCEWithLogitsLoss(), x, y)
    f = report.get("nonneg-output")
    assert f is not None and f.severity == "error"
    assert f.observed.startswith("all 512 outputs are >= 0: min 0,")
    assert "so sigmoid(output) >= 0.5" in f.observed
    assert report.codes.count("nonneg-output") == 1


@pytest.mark.parametrize(
    "build, needle",
    [
        (lambda: sequential(nn.ReLU()), "ends in `3` (ReLU)"),
        (lambda: sequential(nn.ReLU6()), "ends in `3` (ReLU6)"),
        (lambda: sequential(nn.Softplus()), "ends in `3` (Softplus)"),
        (lambda: Tail(torch.abs), "all 512 outputs are >= 0"),
    ],
    ids=["ReLU", "ReLU6", "Softplus", "abs"],
)
def test_non_negative_activations_before_the_loss_are_found(build, needle):
    x, y = make_batch()
    f = check(seeded(build), nn.BCEWithLogitsLoss(), x, y).get("nonneg-output")
    assert f is not None and f.severity == "error"
    assert needle in f.observed


def test_relu_output_with_bce_loss_is_also_bce_on_logits():
    x, y = make_batch()
    report = check(seeded(lambda: sequential(nn.ReLU())), nn.BCELoss(), x, y)
    assert {"nonneg-output", "bce-on-logits"} <= set(report.codes)


def test_tanh_output_is_a_bounded_output_warning():
    x, y = make_batch()
    f = check(seeded(lambda: sequential(nn.Tanh())), nn.BCEWithLogitsLoss(), x, y).get("bounded-output")
    assert f is not None and f.severity == "warning"
    assert "(Tanh)" in f.observed


# --------------------------------------------------------------------------- 2-4. sigmoid and the loss


def test_sigmoid_model_with_bce_with_logits_is_double_sigmoid_error():
    x, y = make_batch()
    report = check(seeded(lambda: sequential(nn.Sigmoid())), nn.BCEWithLogitsLoss(), x, y)
    f = report.get("double-sigmoid")
    assert f is not None and f.severity == "error"
    assert "ends in `3` (Sigmoid)" in f.observed
    assert "never outside [0.5, 0.7311]" in f.observed
    assert "nonneg-output" not in report.codes


def test_functional_sigmoid_with_bce_with_logits_is_double_sigmoid_error():
    x, y = make_batch()
    f = check(seeded(lambda: Tail(torch.sigmoid)), nn.BCEWithLogitsLoss(), x, y).get("double-sigmoid")
    assert f is not None and f.severity == "error"
    assert "stayed inside [0, 1] on 4 probe batches" in f.observed


def test_logits_into_bce_loss_is_bce_on_logits_error():
    x, y = make_batch()
    report = check(seeded(LogitNet), nn.BCELoss(), x, y)
    f = report.get("bce-on-logits")
    assert f is not None and f.severity == "error"
    assert "of 512 model outputs are outside it (range [-" in f.observed
    assert "nn.BCEWithLogitsLoss()" in f.fix


def test_sigmoid_model_with_bce_loss_is_an_unstable_warning_only():
    x, y = make_batch()
    report = check(seeded(lambda: sequential(nn.Sigmoid())), nn.BCELoss(), x, y)
    f = report.get("sigmoid-bce-unstable")
    assert f is not None and f.severity == "warning"
    assert "BCELoss(sigmoid(-120), 1) = 100 (exact: 120) with gradient 0" in f.observed
    assert not report.has_errors


def test_hand_written_sigmoid_then_log_loss_is_unstable_warning():
    def naive_bce(z, y):
        p = torch.sigmoid(z)
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()

    x, y = make_batch()
    report = check(seeded(LogitNet), naive_bce, x, y)
    f = report.get("sigmoid-bce-unstable")
    assert f is not None and f.severity == "warning"
    assert "naive_bce()(z=20, y=0) = inf" in f.observed
    assert "F.logsigmoid" in f.fix


# --------------------------------------------------------------------------- 5. shapes


def test_column_output_against_flat_targets_is_shape_mismatch():
    x, y = make_batch()
    f = check(seeded(Column), nn.BCEWithLogitsLoss(), x, y).get("shape-mismatch")
    assert f is not None and f.severity == "error"
    assert "shape (512, 1) and the targets have shape (512,)" in f.observed
    assert "raised ValueError" in f.observed


def test_broadcasting_loss_reports_the_n_by_n_matrix():
    x, y = make_batch()
    f = check(seeded(Column), nn.MSELoss(), x, y).get("shape-mismatch")
    assert f is not None and f.severity == "error"
    assert "broadcasting to a (512, 512) matrix" in f.observed


def test_flat_output_against_column_targets_is_shape_mismatch():
    x, y = make_batch()
    f = check(seeded(LogitNet), nn.BCEWithLogitsLoss(), x, y.view(-1, 1)).get("shape-mismatch")
    assert f is not None and f.severity == "error"
    assert "shape (512,) and the targets have shape (512, 1)" in f.observed
    assert "y.view(-1)" in f.fix


def test_two_columns_with_a_binary_loss_is_an_error():
    x, y = make_batch()
    f = check(seeded(lambda: Column(2)), nn.BCEWithLogitsLoss(), x, y).get("two-column-output")
    assert f is not None and f.severity == "error"
    assert "2 columns per row (shape (512, 2))" in f.observed


def test_two_columns_with_cross_entropy_is_only_a_hint():
    x, y = make_batch()
    report = check(seeded(lambda: Column(2)), nn.CrossEntropyLoss(), x, y.long())
    assert report.get("two-column-output").severity == "hint"
    assert no_errors_or_warnings(report)


# --------------------------------------------------------------------------- 6. targets


@pytest.mark.parametrize(
    "values, shown, fix",
    [((-1.0, 1.0), "{-1, 1}", "(y > 0).float()"), ((1.0, 2.0), "{1, 2}", "(y == 2).float()")],
)
def test_targets_not_zero_one_are_bad_targets(values, shown, fix):
    x, y = make_batch()
    y_bad = torch.where(y > 0.5, torch.tensor(values[1]), torch.tensor(values[0]))
    f = check(seeded(LogitNet), nn.BCEWithLogitsLoss(), x, y_bad).get("bad-targets")
    assert f is not None and f.severity == "error"
    assert f"the targets take the values {shown} (256 x" in f.observed
    assert fix in f.fix


def test_text_targets_are_bad_targets():
    x, y = make_batch()
    labels = np.where(y.numpy() > 0.5, "yes", "no")
    f = check(seeded(LogitNet), nn.BCEWithLogitsLoss(), x, labels).get("bad-targets")
    assert f is not None and f.severity == "error"
    assert "2 distinct values ('no', 'yes')" in f.observed


def test_integer_targets_with_bce_are_int_targets():
    x, y = make_batch()
    f = check(seeded(LogitNet), nn.BCEWithLogitsLoss(), x, y.long()).get("int-targets")
    assert f is not None and f.severity == "error"
    assert "dtype int64" in f.observed and "y.float()" in f.fix


def test_single_class_batch_is_a_warning():
    x, _ = make_batch()
    f = check(seeded(LogitNet), nn.BCEWithLogitsLoss(), x, torch.zeros(N)).get("bad-targets")
    assert f is not None and f.severity == "warning"
    assert "all 512 targets are 0" in f.observed


# --------------------------------------------------------------------------- 7. imbalance


def prior_logit_net(prior: float) -> nn.Module:
    model = seeded(LogitNet)
    init_output_bias(model, prior)
    return model


def test_imbalance_without_weighting_at_threshold_half_is_a_warning():
    x, y = make_batch(ratio=100.0)
    n_pos = int(y.sum())
    report = check(prior_logit_net(n_pos / N), nn.BCEWithLogitsLoss(), x, y)
    f = report.get("imbalance-no-weighting")
    assert f is not None and f.severity == "warning"
    assert f"{n_pos} positives and {N - n_pos} negatives in the batch (1:" in f.observed
    assert "pos_weight=torch.tensor(" in f.fix


@pytest.mark.parametrize(
    "loss, kwargs",
    [
        (nn.BCEWithLogitsLoss(pos_weight=torch.tensor(100.0)), {}),
        (nn.BCEWithLogitsLoss(), {"sampler_used": True}),
        (nn.BCEWithLogitsLoss(), {"threshold": 0.05}),
    ],
    ids=["pos_weight", "sampler", "threshold"],
)
def test_imbalance_handled_is_not_reported(loss, kwargs):
    x, y = make_batch(ratio=100.0)
    report = check(prior_logit_net(float(y.mean())), loss, x, y, **kwargs)
    assert "imbalance-no-weighting" not in report.codes


def test_focal_loss_counts_as_weighting():
    from binclf.nn.losses import FocalLoss

    x, y = make_batch(ratio=100.0)
    report = check(prior_logit_net(float(y.mean())), FocalLoss(), x, y)
    assert "imbalance-no-weighting" not in report.codes


# --------------------------------------------------------------------------- 8. bias


def test_default_bias_on_imbalanced_data_is_bias_not_prior():
    x, y = make_batch(ratio=8.0)  # below the imbalance check's 10:1
    report = check(seeded(LogitNet), nn.BCEWithLogitsLoss(), x, y)
    f = report.get("bias-not-prior")
    assert f is not None and f.severity == "warning"
    assert "entropy of the prior: 0.3" in f.observed and "logit(prior) = -2.0" in f.observed
    assert "init_output_bias(model, prior=0.11" in f.fix and "model.output.bias" in f.fix
    assert "imbalance-no-weighting" not in report.codes


# --------------------------------------------------------------------------- 9. scales


def test_large_weights_are_saturated_logits():
    model = seeded(lambda: LogisticModel(D))
    with torch.no_grad():
        model.output.weight.normal_(0.0, 30.0)
    x, y = make_batch()
    f = check(model, nn.BCEWithLogitsLoss(), x, y).get("saturated-logits")
    assert f is not None and f.severity == "warning"
    assert "of 512 logits have |z| > 15 at initialisation" in f.observed


def test_unscaled_columns_are_unscaled_inputs():
    x, y = make_batch()
    x[:, 3] *= 5e4
    names = [f"f{i}" for i in range(D)]
    f = check(seeded(LogitNet), nn.BCEWithLogitsLoss(), x, y, feature_names=names).get("unscaled-inputs")
    assert f is not None and f.severity == "warning"
    assert "to 4.992e+04 (`f3`), a ratio of" in f.observed and "(`f3`)" in f.observed


# --------------------------------------------------------------------------- 10. learning rate


def test_learning_rate_probe_finds_a_rising_loss():
    x, y = make_batch()
    report = check(seeded(LogitNet), nn.BCEWithLogitsLoss(), x, y, probe_steps=15, lr=5.0)
    f = report.get("lr-too-high")
    assert f is not None and f.severity in ("warning", "error")
    assert "-step probe with Adam(lr=5) on this batch the loss" in f.observed
    assert "lr=0.5" in f.fix


def test_learning_rate_probe_is_quiet_at_a_sane_rate_and_off_by_default():
    x, y = make_batch()
    model = seeded(LogitNet)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert "lr-too-high" not in check(model, nn.BCEWithLogitsLoss(), x, y, probe_steps=15, optimizer=opt).codes
    assert "lr-too-high" not in check(model, nn.BCEWithLogitsLoss(), x, y, lr=5.0).codes


# --------------------------------------------------------------------------- correct models


@pytest.mark.parametrize("ratio", [1.0, 20.0], ids=["balanced", "1:20"])
@pytest.mark.parametrize(
    "build",
    [
        lambda: LogitNet(),
        lambda: MLP(D),
        lambda: MLP(D, batchnorm=False, dropout=0.0),
        lambda: LogisticModel(D),
    ],
    ids=["plain", "binclf-MLP", "binclf-MLP-nobn", "binclf-logistic"],
)
def test_correct_models_get_no_errors_or_warnings(build, ratio):
    x, y = make_batch(ratio=ratio)
    prior = float(y.mean())
    model = seeded(build)
    init_output_bias(model, prior)
    loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(ratio)) if ratio > 1 else nn.BCEWithLogitsLoss()
    report = check(model, loss, x, y)
    assert no_errors_or_warnings(report), str(report)


def test_correct_model_with_default_init_and_pos_weight_is_clean():
    x, y = make_batch(ratio=20.0)
    loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(20.0))
    assert no_errors_or_warnings(check(seeded(LogitNet), loss, x, y))


def test_binclf_losses_are_understood():
    from binclf.nn.losses import BCEWithLogitsLoss, FocalLoss

    x, y = make_batch(ratio=20.0)
    for loss in (BCEWithLogitsLoss(pos_weight="balanced").fit(y), FocalLoss(pos_weight=20.0)):
        report = check(prior_logit_net(float(y.mean())), loss, x, y)
        assert no_errors_or_warnings(report), str(report)


# --------------------------------------------------------------------------- robustness and report


def test_check_does_not_touch_the_model():
    model = seeded(lambda: MLP(D))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    x, y = make_batch()
    check(model, nn.BCEWithLogitsLoss(), x, y, probe_steps=3)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_a_model_that_raises_is_reported_not_raised():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    x, y = make_batch()
    f = check(Broken(), nn.BCEWithLogitsLoss(), x, y).get("forward-failed")
    assert f is not None and f.severity == "error"
    assert "mat1 and mat2" in f.observed


def test_a_loss_that_raises_is_reported_not_raised():
    def bad_loss(z, y):
        raise KeyError("nope")

    x, y = make_batch()
    report = check(seeded(LogitNet), bad_loss, x, y)
    assert report.get("loss-failed").severity == "error"


def test_report_text_dict_and_codes():
    x, y = make_batch()
    report = check(seeded(lambda: ForumNet(sigmoid=True)), nn.BCELoss(), x, y)
    text = str(report)
    assert text.splitlines()[0].startswith("binclf doctor: ForumNet + BCELoss on a batch of 512 rows")
    assert "[error] nonneg-output" in text and text.rstrip().endswith("1 error, 1 warning, 0 hints")
    assert max(len(line) for line in text.splitlines()) < 100
    data = json.loads(json.dumps(report.to_dict()))
    assert data["has_errors"] is True and data["findings"][0]["code"] == "nonneg-output"
    assert report.codes[0] == "nonneg-output"  # errors first
    assert set(report.codes) <= set(FINDING_CODES)


def test_every_code_the_doctor_reports_has_a_title_and_every_title_a_code():
    """The codes in the doctor's source (``ctx.add("code", ...)``, ``Finding("code", ...)``) are FINDING_CODES' keys."""
    import ast
    import binclf.doctor

    emitted = set()
    for path in Path(binclf.doctor.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("add", "Finding") and isinstance(node.args[0].value, str):
                emitted.add(node.args[0].value)
    assert len(emitted) > 10  # the scan found the checks
    assert emitted == set(FINDING_CODES)


def test_the_example_forum_model_is_diagnosed():
    example = Path(__file__).parents[1] / "examples" / "doctor_forum_model.py"
    model = seeded(lambda: load_object(f"{example}:ForumNet", n_features=D))
    x, y = make_batch()
    report = check(model, load_object(f"{example}:criterion"), x, y)
    assert report.get("nonneg-output").severity == "error"


def test_finding_rejects_an_unknown_severity():
    with pytest.raises(ValueError, match="severity must be one of"):
        Finding("x", "fatal", "o", "w", "f")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- load_object


def test_load_object_builds_a_class_with_the_feature_count():
    model = load_object(f"{MODELS / 'forum_relu.py'}:ForumNet", n_features=5)
    assert isinstance(model, nn.Module) and model.fc1.in_features == 5


def test_load_object_calls_factories_and_keeps_instances_and_loss_functions():
    assert load_object(f"{MODELS / 'forum_relu.py'}:make_model", n_features=3).fc1.in_features == 3
    assert isinstance(load_object(f"{MODELS / 'good_mlp.py'}:make_model"), nn.Module)
    assert isinstance(load_object(f"{MODELS / 'good_mlp.py'}:make_loss"), nn.BCEWithLogitsLoss)
    assert isinstance(load_object(f"{MODELS / 'forum_relu.py'}:criterion"), nn.BCELoss)
    fn = load_object(f"{MODELS / 'good_mlp.py'}:my_loss")
    assert callable(fn) and fn.__name__ == "my_loss"


def test_load_object_errors_are_config_errors():
    with pytest.raises(ConfigError, match="expected FILE.py:NAME"):
        load_object("model.py")
    with pytest.raises(ConfigError, match="file not found: .*missing.py"):
        load_object("missing.py:Net")
    with pytest.raises(ConfigError, match="has no 'Nope'; classes and functions defined there: ForumNet, make_model"):
        load_object(f"{MODELS / 'forum_relu.py'}:Nope")
    with pytest.raises(ConfigError, match="needs `input_size`"):
        load_object(f"{MODELS / 'forum_relu.py'}:ForumNet")


# --------------------------------------------------------------------------- run (the CLI's entry)


@pytest.fixture()
def csv_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 300
    a, b = rng.normal(size=n), rng.normal(size=n)
    df = pd.DataFrame(
        {
            "a": a,
            "b": b,
            "colour": rng.choice(["red", "green", "blue"], size=n),
            "label": np.where(a + 0.5 * rng.normal(size=n) > 0, "yes", "no"),
            "signed": np.where(a > 0, 1, -1),
        }
    )
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False)
    return path


def test_run_finds_the_forum_bug_from_files(csv_path: Path):
    report = run(
        f"{MODELS / 'forum_relu.py'}:ForumNet",
        data_path=csv_path,
        target="label",
        loss_spec=f"{MODELS / 'forum_relu.py'}:criterion",
    )
    assert report.has_errors and report.get("nonneg-output") is not None
    assert "'no' -> 0, 'yes' -> 1" in report.get("target-mapping").observed
    assert "300 rows sampled" in report.summary[0]


def test_run_on_a_correct_model_has_no_errors(csv_path: Path):
    df = pd.read_csv(csv_path).drop(columns=["signed"])
    df.to_csv(csv_path, index=False)
    report = run(f"{MODELS / 'good_mlp.py'}:GoodNet", data_path=csv_path, target="label", probe=True)
    assert not report.has_errors, str(report)


def test_run_without_loss_assumes_bce_with_logits_and_says_so(csv_path: Path):
    report = run(f"{MODELS / 'forum_relu.py'}:ForumNet", data_path=csv_path, target="label")
    assert "double-sigmoid" in report.codes
    assert "assumed nn.BCEWithLogitsLoss()" in report.get("assumed-loss").observed


def test_run_keeps_numeric_targets_so_bad_targets_show(csv_path: Path):
    report = run(f"{MODELS / 'good_mlp.py'}:GoodNet", data_path=csv_path, target="signed")
    assert report.get("bad-targets").severity == "error"


def test_run_data_errors_are_trains(csv_path: Path):
    # The same reader and target check as binclf train, so the same messages.
    with pytest.raises(DataError, match="target column 'nope' is not in the table; the columns are 'a'"):
        run(f"{MODELS / 'good_mlp.py'}:GoodNet", data_path=csv_path, target="nope")
    with pytest.raises(DataError, match="x.csv: no such file"):
        run(f"{MODELS / 'good_mlp.py'}:GoodNet", data_path=csv_path.with_name("x.csv"), target="label")
    xlsx = csv_path.with_suffix(".xlsx")
    xlsx.write_bytes(csv_path.read_bytes())
    with pytest.raises(DataError, match="unknown file type '.xlsx'"):
        run(f"{MODELS / 'good_mlp.py'}:GoodNet", data_path=xlsx, target="label")


def test_run_reads_parquet_as_it_reads_csv(csv_path: Path):
    import pyarrow.csv
    import pyarrow.parquet

    pq_path = csv_path.with_suffix(".parquet")
    pyarrow.parquet.write_table(pyarrow.csv.read_csv(csv_path), pq_path)
    args = dict(target="label", loss_spec=f"{MODELS / 'forum_relu.py'}:criterion")
    from_csv = run(f"{MODELS / 'forum_relu.py'}:ForumNet", data_path=csv_path, **args)
    from_parquet = run(f"{MODELS / 'forum_relu.py'}:ForumNet", data_path=pq_path, **args)
    assert from_parquet.findings == from_csv.findings
    assert from_parquet.summary[1:] == from_csv.summary[1:]
    assert "nonneg-output" in from_parquet.codes


def test_run_positive_class_is_trains_where_the_old_rule_was_not():
    # Smarket's Direction is Up (648 rows) / Down (602): no usual pair, so train takes the
    # rarer class, Down; the doctor's old rule (the label sorting last) took Up.
    from binclf.data import encode_target
    from binclf.io import read_table

    data = DATA / "smarket.csv"
    _, _, info, _ = encode_target(read_table(data)["Direction"], column="Direction")
    assert info.positive == "Down"
    report = run(f"{MODELS / 'good_mlp.py'}:GoodNet", data_path=data, target="Direction")
    assert "'Up' -> 0, 'Down' -> 1" in report.get("target-mapping").observed
    assert any("positive class of 'Direction': 'Down' (the rarer class" in s for s in report.summary)
    flipped = run(f"{MODELS / 'good_mlp.py'}:GoodNet", data_path=data, target="Direction", positive="Up")
    assert "'Down' -> 0, 'Up' -> 1" in flipped.get("target-mapping").observed


def test_run_two_valued_numeric_target_keeps_its_values_and_trains_positive(tmp_path: Path):
    # {1, 2} fed as is to a loss is a bug to report; its fix maps train's positive class
    # (the rarer value, 1 here) to 1, not the larger value.
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=200), "grade": np.where(np.arange(200) < 60, 1, 2)})
    path = tmp_path / "grades.csv"
    df.to_csv(path, index=False)
    report = run(f"{MODELS / 'good_mlp.py'}:GoodNet", data_path=path, target="grade")
    bad = report.get("bad-targets")
    assert bad.severity == "error" and "y = (y == 1).float()  # {2, 1} -> {0, 1}" in bad.fix


def test_run_prepares_inputs_as_train_does(tmp_path: Path):
    # The old doctor fed raw numbers and then blamed the model for their scale
    # (unscaled-inputs, bias-not-prior, saturated-logits); train scales them.
    rng = np.random.default_rng(1)
    n = 400
    df = pd.DataFrame(
        {
            "year": rng.integers(1990, 2020, size=n) * 1.0,
            "income": rng.lognormal(10, 1, size=n),
            "ratio": rng.normal(0, 0.01, size=n),
            "id": np.arange(n),
        }
    )
    df["label"] = np.where(df["ratio"] + 0.01 * rng.normal(size=n) > 0, "yes", "no")
    path = tmp_path / "scales.csv"
    df.to_csv(path, index=False)
    report = run(f"{MODELS / 'good_mlp.py'}:GoodNet", data_path=path, target="label")
    assert not {"unscaled-inputs", "saturated-logits", "bias-not-prior"} & set(report.codes), str(report)
    assert "not used as features, as in binclf train: 'id' (identifier)" in report.summary
    assert "x 3 features" in report.summary[3]
