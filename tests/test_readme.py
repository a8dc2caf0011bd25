"""The README's Python examples run as shown (the CLI examples are covered by test_cli.py)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_readme_python_examples_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 3
    # The examples use paths relative to the repository root; run them in a
    # scratch directory that sees the same tests/ folder, so nothing is written
    # into the checkout.
    (tmp_path / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    for code in blocks:
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"README example failed:\n{code}\n{r.stderr[-2000:]}"
