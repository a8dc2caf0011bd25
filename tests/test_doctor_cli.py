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
