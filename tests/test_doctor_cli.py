"""`binclf doctor` on the command line: findings printed, exit 1 on errors, 0 on a sound model."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent


def _doctor(*args):
    return subprocess.run([sys.executable, "-m", "binclf", "doctor", *args], capture_output=True, text=True)


def test_forum_model_is_an_error_and_exits_1():
    r = _doctor(
        f"{ROOT / 'examples' / 'doctor_forum_model.py'}:ForumNet",
        "--data", str(HERE / "data" / "oj.csv"), "--target", "Purchase",
        "--loss", f"{ROOT / 'examples' / 'doctor_forum_model.py'}:criterion",
    )
    assert r.returncode == 1, r.stderr
    assert "[error] nonneg-output" in r.stdout
    assert "return self.fc_last(out).squeeze(-1)" in r.stdout


def test_sound_model_has_no_error_or_warning_and_exits_0():
    r = _doctor(f"{HERE / 'doctor_models' / 'good_mlp.py'}:GoodNet", "--data", str(HERE / "data" / "bananas.csv"),
                "--target", "label")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[error]" not in r.stdout and "[warning]" not in r.stdout


def test_missing_model_file_is_a_one_line_error_exit_2():
    r = _doctor("nope.py:Net", "--data", str(HERE / "data" / "oj.csv"), "--target", "Purchase")
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "nope.py" in r.stderr


def test_parquet_data_gives_the_findings_of_the_same_csv(tmp_path):
    # The help says CSV/Parquet; the doctor reads through binclf.io.read_table, as train does.
    import pyarrow.csv
    import pyarrow.parquet

    csv = HERE / "data" / "oj.csv"
    parquet = tmp_path / "oj.parquet"
    pyarrow.parquet.write_table(pyarrow.csv.read_csv(csv), parquet)
    forum = ROOT / "examples" / "doctor_forum_model.py"
    args = ("--target", "Purchase", "--loss", f"{forum}:criterion")
    from_csv = _doctor(f"{forum}:ForumNet", "--data", str(csv), *args)
    from_parquet = _doctor(f"{forum}:ForumNet", "--data", str(parquet), *args)
    assert from_parquet.returncode == 1, from_parquet.stderr
    assert "[error] nonneg-output" in from_parquet.stdout
    # Everything after the "data: PATH (...)" line (wrapped differently) is the same.
    tail = lambda out: out[out.index("binclf doctor:"):]  # noqa: E731
    assert tail(from_parquet.stdout) == tail(from_csv.stdout)


def test_probe_trains_a_copy_and_reports_a_rising_loss():
    # HotNet multiplies its logit by 1e5, so each Adam step (lr 1e-3) overshoots: only the
    # 20-step training probe of --probe can see it; without --probe nothing is wrong.
    model = f"{HERE / 'doctor_models' / 'hot_logit.py'}:HotNet"
    data = ("--data", str(HERE / "data" / "bananas.csv"), "--target", "label")
    quiet = _doctor(model, *data)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "lr-too-high" not in quiet.stdout and "no errors or warnings" in quiet.stdout
    probed = _doctor(model, *data, "--probe")
    assert probed.returncode == 0, probed.stdout + probed.stderr  # a warning does not fail CI
    assert "[warning] lr-too-high: the loss rises during a short training probe" in probed.stdout
    text = " ".join(probed.stdout.split())  # unwrapped
    assert "in a 20-step probe with Adam(lr=0.001) on this batch the loss rose: 0.6931 at the start" in text
    assert "optimizer = torch.optim.Adam(model.parameters(), lr=0.0001)" in probed.stdout


def test_positive_option_picks_the_other_class():
    r = _doctor(f"{HERE / 'doctor_models' / 'good_mlp.py'}:GoodNet", "--data", str(HERE / "data" / "smarket.csv"),
                "--target", "Direction", "--positive", "Up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "'Down' -> 0, 'Up' -> 1" in r.stdout and "positive class of 'Direction': 'Up' (as requested" in r.stdout
