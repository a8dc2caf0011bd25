"""The model bundle: a directory with ``model.safetensors`` and ``bundle.json``.

Nothing in a bundle is pickled: weights are safetensors, everything else
(schema, fitted preprocessing, calibration, threshold, metrics) is JSON.
``bundle.json`` records the SHA-256 of the weights file and of its own content
(:func:`binclf.bundle_schema.meta_digest`); loading validates every field
(:func:`binclf.bundle_schema.validate_meta`) and refuses a bundle whose JSON or
weights were edited, whose format version is unknown, or that names a file
outside its directory.

Saving is atomic (:mod:`binclf.io.atomic`): the files are written into a
temporary sibling directory that is renamed into place only when complete, so
an interrupted save never leaves a half bundle; an existing bundle is replaced
only with ``force=True``, and a directory that is not a bundle never is.
"""

from __future__ import annotations

import hashlib
import json
import os  # noqa: F401 - tests patch bundle.os.fsync (the writes are in binclf.io.atomic)
from pathlib import Path
from typing import Any

from collections.abc import Sequence
from typing import TYPE_CHECKING

from binclf.errors import BundleError, DataError
from binclf.io.atomic import Layout, OutputError, write_directory
from binclf.io.messages import check_unique_names

if TYPE_CHECKING:  # torch is imported when weights are read or written: checks stay fast
    import torch

    from binclf.data.schema import Schema

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "META_FILE",
    "REPORT_FILE",
    "BUNDLE_LAYOUT",
    "save_bundle",
    "load_bundle",
    "read_meta",
    "check_columns",
]

FORMAT = "binclf-bundle"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "bundle.json"
REPORT_FILE = "report.html"
#: What a bundle directory may hold; ``--force`` replaces only such a directory.
BUNDLE_LAYOUT = Layout("binclf bundle", META_FILE, frozenset({META_FILE, WEIGHTS_FILE, REPORT_FILE}))


def _dumps(meta: dict[str, Any]) -> str:
    # Sorted keys and a fixed layout: the same bundle always serialises to the same bytes.
    return json.dumps(meta, indent=2, sort_keys=True, allow_nan=True) + "\n"


def save_bundle(
    path: str | Path,
    *,
    meta: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    force: bool = False,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write a bundle atomically to the directory ``path``; returns it.

    ``meta`` is the JSON part (the format fields and the weights' hash are
    added here); ``tensors`` are the weights, saved contiguous and on the CPU.
    ``extra_files`` (e.g. ``report.html``) are written into the same directory.
    With ``force`` an existing *bundle* is replaced; a directory that is not
    one (or holds other files) is refused, nothing deleted: see :mod:`binclf.io.atomic`.
    """
    from safetensors.torch import save as st_save

    path = Path(path)
    extra = dict(extra_files or {})
    try:
        weights = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        meta = {
            **meta,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "weights": {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(weights).hexdigest(), "tensors": len(tensors)},
        }
        meta = _with_digest(meta)
        files = {WEIGHTS_FILE: weights, META_FILE: _dumps(meta).encode("utf-8"), **extra}
        return write_directory(path, files, layout=BUNDLE_LAYOUT, force=force, option="--out")
    except OutputError as exc:
        raise BundleError(str(exc)) from None


def _with_digest(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with the SHA-256 of its content, so a later edit of bundle.json is detected."""
    from binclf.bundle_schema import META_HASH_KEY, meta_digest

    # Hash what a reader will see: the JSON round trip turns tuples into lists and
    # keys into text, which can change the order of sorted keys.
    canonical = json.loads(_dumps({k: v for k, v in meta.items() if k != META_HASH_KEY}))
    return {**canonical, META_HASH_KEY: meta_digest(canonical)}


def load_bundle(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and verify a bundle: ``(meta, tensors)``.

    Raises :class:`BundleError` when ``path`` is not a bundle, the format or its
    version is unknown, or the weights file does not match its recorded hash.
    """
    from safetensors.torch import load as st_load

    meta, data = _verified(path)
    weights_path = Path(path) / meta["weights"]["file"]
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise BundleError(f"{weights_path} is not a readable safetensors file ({exc})") from None
    return meta, tensors


def read_meta(path: str | Path) -> dict[str, Any]:
    """The verified ``bundle.json`` of a bundle (format, version and weights hash checked), without torch."""
    return _verified(path)[0]


def _verified(path: str | Path) -> tuple[dict[str, Any], bytes]:
    from binclf.bundle_schema import META_HASH_KEY, confined_path, meta_digest, validate_meta

    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist: pass the --out directory written by `binclf train`")
    if not path.is_dir():
        raise BundleError(f"{path} is a file, not a bundle: pass the directory written by `binclf train`")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise BundleError(
            f"{path} is not a binclf bundle: it has no {META_FILE}; pass the directory written by `binclf train`"
        )
    confined_path(path, META_FILE, field=META_FILE)  # a link out of the bundle is not its description
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(
            f"{meta_path} is not valid JSON ({_one_line(exc)}): the bundle is damaged; train it again"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{meta_path} is not a binclf bundle description (no format {FORMAT!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path} has bundle format version {version!r}, this binclf reads version {FORMAT_VERSION}: "
            "use the binclf version that wrote it, or train the model again"
        )
    # Every field first, so a bad value is named; then the content hash catches
    # edits that are well-formed (a threshold moved from 0.31 to 0.7).
    validate_meta(meta, where=meta_path)
    # Bundles written before the JSON was hashed (binclf 0.1.0, format version 1:
    # tests/fixtures/bundle-v1-*) carry no hash; they are still accepted, with
    # every field validated above, since refusing them would strand every model
    # trained so far. The hash guards against accidental edits, not an attacker
    # (who could drop the field or recompute it), so accepting its absence
    # gives nothing away that the hash itself would protect.
    recorded = meta.get(META_HASH_KEY)
    if recorded is not None and recorded != meta_digest(meta):
        raise BundleError(
            f"{meta_path}: {META_FILE} was modified after it was written (hash mismatch); "
            "retrain or restore it"
        )
    weights_path = confined_path(path, meta["weights"]["file"], field="weights.file")
    if not weights_path.is_file():
        raise BundleError(f"{path} is missing its weights file {weights_path.name}: the bundle is incomplete")
    data = weights_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta["weights"]["sha256"]:
        raise BundleError(
            f"{weights_path} does not match the sha256 recorded in {META_FILE} "
            f"(expected {meta['weights']['sha256'][:12]}..., found {digest[:12]}...): the weights were modified; "
            "restore the original file or train again"
        )
    return meta, data


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


def _sep_hint(names: Sequence[str], wanted: Sequence[str]) -> str:
    """A hint that the delimiter is wrong, when one header name splits into several wanted names."""
    known = set(wanted)
    for name in names:
        for sep in ",;\t|":
            parts = [part.strip().strip('"') for part in name.split(sep)]
            if sum(part in known for part in parts) >= 2:
                shown = repr(name) if len(name) <= 60 else repr(name[:57]) + "..."
                return (
                    f"the header was read as the column {shown}, which holds several of them: "
                    f"the delimiter is probably {sep!r}; pass --sep {sep!r} (sep={sep!r})"
                )
    return ""


def check_columns(
    schema: Schema,
    source: str | Path,
    names: Sequence[str],
    *,
    target: str | None = None,
    keep: Sequence[str] = (),
    notices: list[str] | None = None,
) -> None:
    """Check a table's column ``names`` against a bundle's input ``schema``.

    Duplicate names, missing feature columns (all listed) and ``keep`` columns
    absent from the table are a DataError; columns the model does not use (the
    ``target`` aside, expected in labelled files) add a notice to ``notices``.
    """
    check_unique_names(source, names)
    present = set(names)
    missing = [n for n in schema.names if n not in present]
    if missing:
        raise DataError(
            f"{source}: {len(missing)} feature column(s) the model was trained on are missing: "
            f"{', '.join(map(repr, missing))}; {_sep_hint(names, schema.names) or 'add them (empty cells are allowed) and run again'}"
        )
    missing_keep = [n for n in keep if n not in present]
    if missing_keep:
        raise DataError(
            f"{source}: --keep column(s) {', '.join(map(repr, missing_keep))} not in the file; "
            f"the file has {', '.join(map(repr, names[:30]))}"
        )
    known = {*schema.names, *keep, target}
    extra = [n for n in names if n not in known]
    if extra and notices is not None:
        shown = ", ".join(extra[:10]) + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
        notices.append(f"ignoring {len(extra)} column(s) the model does not use: {shown}")
