"""Every write binclf makes to a user's disk, and every "may I write here?" decision.

Two kinds of output exist: a **file** (predictions, an HTML report) and a
**directory** of known files (a bundle). Both follow the same rules, checked by
:func:`check_output_file` / :func:`check_output_dir` *before any work* (reading
data, training) and again, cheaply, when the output is committed:

- an output never is, nor resolves to (through symlinks, ``..`` or a hard
  link), one of the command's input files, nor lies inside a directory the
  command reads (a bundle) or any other binclf directory (one holding its
  layout's marker file, e.g. ``bundle.json``);
- an output directory replaces an existing one only with ``force`` and only
  when that directory has the output's layout (its marker and nothing but the
  files that layout may hold); never the current directory or one above it;
- the place the output goes must be writable: a temporary file is created
  there and removed again, so a read-only or full location is reported in one
  line before the work that would fill it;
- a file output's extension must be one the writer supports.

Writes are atomic: :func:`atomic_file` and :func:`write_directory` write to a
hidden temporary sibling and rename it into place only when complete, so an
error or Ctrl-C leaves either the old state or the new one, never half of
either. Every completed rename is recorded for :func:`track`, so an entry point
interrupted just after a write can say that the output is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from binclf.errors import ConfigError

__all__ = [
    "Layout",
    "OutputError",
    "atomic_file",
    "check_output_dir",
    "check_output_file",
    "track",
    "write_directory",
    "write_file",
]


class OutputError(ConfigError):
    """An output path binclf refuses to write: it would destroy something, or cannot be written."""


@dataclass(frozen=True)
class Layout:
    """A directory binclf writes: recognised by ``marker``, holding only ``files``.

    ``name`` is how messages call it ("binclf bundle").
    """

    name: str
    marker: str
    files: frozenset[str]

    def marks(self, directory: Path) -> bool:
        """Whether ``directory`` holds this layout's marker file."""
        return (directory / self.marker).is_file()

    def foreign(self, directory: Path, extra: Sequence[str] = ()) -> list[str]:
        """Entries of ``directory`` this layout (plus ``extra`` names) does not hold, sorted."""
        allowed = self.files | set(extra)
        return sorted(
            p.name for p in directory.iterdir() if p.name not in allowed or p.is_symlink() or not p.is_file()
        )


# --------------------------------------------------------------------------- checks


def _resolved(path: str | Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _same_file(a: Path, b: Path) -> bool:
    if _resolved(a) == _resolved(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _inside(path: Path, directory: Path) -> bool:
    """Whether resolved ``path`` is ``directory`` or lies below it."""
    return path == directory or directory in path.parents


def _check_not_input(path: Path, option: str, inputs: Sequence[str | Path], containers: Sequence[str | Path]) -> None:
    real = _resolved(path)
    for source in inputs:
        if source is None:
            continue
        if _same_file(path, Path(source)):
            raise OutputError(
                f"{option} {path} is the input file {source}: it would be overwritten; "
                "choose another output path"
            )
    for directory in containers:
        if directory is None:
            continue
        if _inside(real, _resolved(directory)):
            raise OutputError(
                f"{option} {path} is inside {directory}, which this command reads: writing there would damage it; "
                "choose an output path outside it"
            )


def _check_not_in_layout(path: Path, option: str, layouts: Sequence[Layout]) -> None:
    """Refuse a path inside any directory that holds one of ``layouts``' marker."""
    for parent in _resolved(path).parents:
        for layout in layouts:
            if layout.marks(parent):
                raise OutputError(
                    f"{option} {path} is inside the {layout.name} {parent}: writing there would damage it; "
                    "choose an output path outside it"
                )


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def _check_writable(directory: Path, option: str, shown: Path) -> None:
    """Create and remove a temporary file in ``directory`` (or its nearest existing ancestor)."""
    base = _nearest_existing(directory)
    if not base.is_dir():
        raise OutputError(
            f"{option} {shown}: {base} is a file, not a directory, so nothing can be written below it; "
            "choose another output path"
        )
    try:
        fd, name = tempfile.mkstemp(prefix=".binclf-write-check.", suffix=".tmp", dir=base)
    except OSError as exc:
        raise OutputError(
            f"{option} {shown}: cannot write in {base} ({exc.strerror or exc}); "
            "choose a writable location or fix its permissions"
        ) from None
    os.close(fd)
    os.unlink(name)


def check_output_file(
    path: str | Path,
    *,
    option: str = "output",
    extensions: Sequence[str] | None = None,
    inputs: Sequence[str | Path] = (),
    containers: Sequence[str | Path] = (),
    layouts: Sequence[Layout] = (),
) -> Path:
    """Refuse a file output that would destroy an input or cannot be written; returns it as a Path.

    Parameters
    ----------
    path
        The output file the user named.
    option
        How messages name it (``"--output"``).
    extensions
        Lower-case endings the writer supports (``(".csv", ".parquet")``); ``None``: any.
    inputs
        Files the command reads: the output may not be (or resolve to) one of them.
    containers
        Directories the command reads (a bundle): the output may not lie inside one.
    layouts
        binclf directory layouts (a bundle) the output may not lie inside, wherever they are.

    Returns
    -------
    Path
        ``path``, unchanged.

    Raises
    ------
    OutputError
        One line: what is wrong with the path, and the fix.
    """
    path = Path(path)
    if path.is_dir():
        want = f" ending in {' or '.join(extensions)}" if extensions else ""
        raise OutputError(f"{option} {path} is a directory: pass a file name{want}")
    # What the path would destroy first: that is the message the user needs.
    _check_not_input(path, option, inputs, containers)
    _check_not_in_layout(path, option, layouts)
    if extensions is not None and not path.name.lower().endswith(tuple(extensions)):
        suffix = "".join(path.suffixes[-2:]) or "(no extension)"
        raise OutputError(
            f"{option} {path}: unsupported file type {suffix!r}; name the file with one of "
            f"{', '.join(extensions)}"
        )
    _check_writable(path.parent, option, path)
    return path


def check_output_dir(
    path: str | Path,
    *,
    layout: Layout,
    force: bool = False,
    option: str = "output",
    inputs: Sequence[str | Path] = (),
    containers: Sequence[str | Path] = (),
    extra: Sequence[str] = (),
) -> Path:
    """Refuse a directory output unless it is new, or an existing ``layout`` directory replaced with ``force``.

    Parameters
    ----------
    path
        The directory to write.
    layout
        What the directory will hold: only a directory of this layout (its
        marker and no file outside ``layout.files`` and ``extra``) is replaced.
    force
        Whether an existing ``layout`` directory may be replaced.
    option, inputs, containers
        As in :func:`check_output_file`; ``path`` may not hold an input either.
    extra
        File names this write adds beyond ``layout.files``.

    Returns
    -------
    Path
        ``path``, unchanged.

    Raises
    ------
    OutputError
        One line: what is wrong, nothing touched.
    """
    path = Path(path)
    real = _resolved(path)
    cwd = _resolved(Path.cwd())
    if _inside(cwd, real):
        where = "the current directory" if real == cwd else f"a parent of the current directory {cwd}"
        raise OutputError(f"{option} {path} is {where}: it cannot be replaced; choose a new directory name")
    for source in inputs:
        if source is not None and _inside(_resolved(source), real):
            raise OutputError(
                f"{option} {path} holds the input file {source}: it cannot be replaced; choose a new directory name"
            )
    _check_not_input(path, option, (), containers)
    _check_not_in_layout(path, option, (layout,))
    if os.path.lexists(path):
        if not force:
            raise OutputError(f"{path} already exists: choose another {option} directory or pass --force to replace it")
        if path.is_symlink() or not path.is_dir():
            raise OutputError(f"{path} exists and is not a directory: choose another {option} path")
        if not layout.marks(path):
            raise OutputError(
                f"{path} is not a {layout.name} (it has no {layout.marker}): --force replaces only a {layout.name}; "
                f"choose another {option} directory (nothing was deleted)"
            )
        foreign = layout.foreign(path, extra)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OutputError(
                f"{path} holds files a {layout.name} does not ({shown}): --force replaces only a {layout.name}; "
                f"move them away or choose another {option} directory (nothing was deleted)"
            )
    _check_writable(path.parent, option, path)
    return path


# --------------------------------------------------------------------------- writes

_trackers: list[list[Path]] = []


@contextlib.contextmanager
def track() -> Iterator[list[Path]]:
    """Collect the outputs committed (renamed into place, complete) while the block runs."""
    written: list[Path] = []
    _trackers.append(written)
    try:
        yield written
    finally:
        _trackers.remove(written)


def _committed(path: Path) -> None:
    for written in _trackers:
        written.append(path)


def _umask() -> int:
    """The process's file-creation mask (read without changing it for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    Missing parent directories are made, and removed again on error: a failed
    write leaves nothing behind. The file gets the usual mode (0666 less the umask).
    """
    path = Path(path)
    made = [d for d in (path.parent, *path.parent.parents) if not os.path.lexists(d)]
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files
        _fsync(tmp)
        os.replace(tmp, path)
        tmp = None
        _committed(path)
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        for d in made:  # innermost first
            try:
                d.rmdir()
            except OSError:
                break
        raise


def write_file(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`); returns ``path``."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_directory(
    path: str | Path,
    files: Mapping[str, bytes],
    *,
    layout: Layout,
    force: bool = False,
    option: str = "output",
    before_commit: Callable[[], None] | None = None,
) -> Path:
    """Write the directory ``path`` holding ``files`` (name -> bytes) atomically; returns ``path``.

    The files go into a hidden temporary sibling, are flushed to disk, and the
    sibling is renamed into place. An existing directory is replaced only as
    :func:`check_output_dir` allows (checked again here, as the disk may have
    changed since the first check). ``before_commit`` runs just before the rename.
    """
    path = Path(path)
    for name in files:
        if not name or name != Path(name).name or name in (".", ".."):
            raise OutputError(f"{name!r} is not a plain file name: the files of a {layout.name} lie directly in it")
    check_output_dir(path, layout=layout, force=force, option=option, extra=tuple(files))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the directory gets the usual mode
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            os.chmod(tmp / name, 0o666 & ~_umask())
        for name in files:
            _fsync(tmp / name)
        if before_commit is not None:
            before_commit()
        if os.path.lexists(path):
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            try:
                tmp.rename(path)
            except BaseException:
                old.rename(path)  # put the old one back
                raise
            _committed(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
            _committed(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
