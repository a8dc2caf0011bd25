"""Tests for binclf.io.atomic: the output checks refuse what would destroy a file, and writes are all-or-nothing."""

from __future__ import annotations

import os

import pytest

from binclf.io.atomic import (
    Layout,
    OutputError,
    atomic_file,
    check_output_dir,
    check_output_file,
    track,
    write_directory,
    write_file,
)

KIND = Layout("test bundle", "meta.json", frozenset({"meta.json", "w.bin"}))


def test_check_output_file_refuses_inputs_by_any_path(tmp_path):
    """The input itself, a symlink to it, a hard link and a `..` spelling are all the input."""
    src = tmp_path / "in.csv"
    src.write_text("a\n1\n")
    (tmp_path / "ln.csv").symlink_to(src)
    os.link(src, tmp_path / "hard.csv")
    (tmp_path / "d").mkdir()
    for out in (src, tmp_path / "ln.csv", tmp_path / "hard.csv", tmp_path / "d" / ".." / "in.csv"):
        with pytest.raises(OutputError, match="is the input file"):
            check_output_file(out, inputs=[src])
    assert check_output_file(tmp_path / "out.csv", inputs=[src]) == tmp_path / "out.csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "hard.csv", "in.csv", "ln.csv"]  # probe removed


def test_check_output_file_refuses_layout_members_extensions_and_unwritable(tmp_path):
    """Inside a marked directory, an unsupported extension, below a file: refused, the fix in the message."""
    kind_dir = tmp_path / "b"
    kind_dir.mkdir()
    (kind_dir / "meta.json").write_text("{}")
    with pytest.raises(OutputError, match="inside the test bundle"):
        check_output_file(kind_dir / "deep" / "x.csv", layouts=(KIND,))
    with pytest.raises(OutputError, match=r"unsupported file type '.json'; name the file with one of .csv, .pq"):
        check_output_file(tmp_path / "x.json", extensions=(".csv", ".pq"))
    with pytest.raises(OutputError, match="is a directory"):
        check_output_file(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a directory"):
        check_output_file(tmp_path / "f" / "x.csv")


def test_check_output_dir_replaces_only_its_layout(tmp_path, monkeypatch):
    """New: fine. Existing: needs force, must hold the marker and only the layout's files; never the cwd."""
    monkeypatch.chdir(tmp_path)
    assert check_output_dir(tmp_path / "new", layout=KIND) == tmp_path / "new"
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(OutputError, match="already exists.*--force"):
        check_output_dir(d, layout=KIND)
    with pytest.raises(OutputError, match="is not a test bundle \\(it has no meta.json\\)"):
        check_output_dir(d, layout=KIND, force=True)
    (d / "meta.json").write_text("{}")
    (d / "mine.txt").write_text("x")
    with pytest.raises(OutputError, match="holds files a test bundle does not \\(mine.txt\\)"):
        check_output_dir(d, layout=KIND, force=True)
    assert check_output_dir(d, layout=KIND, force=True, extra=("mine.txt",)) == d
    for cwd in (".", str(tmp_path), "d/.."):
        with pytest.raises(OutputError, match="is the current directory"):
            check_output_dir(cwd, layout=KIND, force=True)


def test_write_directory_is_atomic_and_tracked(tmp_path, monkeypatch):
    """A failed write leaves nothing (and the old directory intact); a successful one is recorded by track()."""
    out = tmp_path / "b"
    with track() as written:
        write_directory(out, {"meta.json": b"1", "w.bin": b"x"}, layout=KIND)
    assert written == [out] and (out / "meta.json").read_bytes() == b"1"

    def fail(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", fail)
    with track() as written, pytest.raises(KeyboardInterrupt):
        write_directory(out, {"meta.json": b"2", "w.bin": b"y"}, layout=KIND, force=True)
    assert written == [] and (out / "meta.json").read_bytes() == b"1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    with pytest.raises(OutputError, match="not a plain file name"):
        write_directory(tmp_path / "c", {"../evil": b""}, layout=KIND)


def test_atomic_file_leaves_nothing_on_error(tmp_path):
    """An error inside the block removes the temporary file and the directories made for it."""
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "new" / "deeper" / "x.csv") as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    assert write_file(tmp_path / "y.html", b"<p>") == tmp_path / "y.html"
    assert (tmp_path / "y.html").read_bytes() == b"<p>" and oct((tmp_path / "y.html").stat().st_mode)[-3:] != "600"
