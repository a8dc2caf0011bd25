"""The ``binclf`` command line: parse, call the library, print.

Every :class:`~binclf.errors.BinclfError` becomes one line on stderr and exit
code 2 (``--debug`` shows the traceback instead). Results go to stdout, notes
and progress to stderr, so ``binclf predict MODEL data.csv > out.csv`` works.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import click

from binclf import __version__
from binclf.errors import BinclfError

DEMO_TABLE = "oj.csv"
DEMO_TARGET = "Purchase"


# -- output helpers ----------------------------------------------------------------
def _note(message: str) -> None:
    click.echo(f"note: {message}", err=True)


def _warning(message: Warning | str, *_: Any, **__: Any) -> None:
    """Python warnings (binclf's and NumPy's) as one `warning:` line, without source paths."""
    click.echo(f"warning: {_one_line(str(message))}", err=True)


def _say(message: str) -> None:
    click.echo(message, err=True)


def _fail(message: str, *, debug: bool, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    if not debug and code == 1:
        click.echo("(run again with --debug for the full traceback)", err=True)
    _after_rank0(code)
    sys.exit(code)


# -- several processes (torchrun; binclf.dist) ------------------------------------------
def _rank() -> int:
    """This process's rank under torchrun (0 without it), from the environment: no torch needed."""
    from binclf.dist.context import launched

    return int(os.environ.get("RANK", "0")) if launched() else 0


@contextlib.contextmanager
def _only_rank0_speaks(debug: bool) -> Any:
    """Ranks other than 0 print nothing (rank 0 prints for the run), unless --debug."""
    if _rank() == 0 or debug:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        yield


# How long a failing rank other than 0 waits for the launcher to stop it once rank 0 has failed too.
_RANK_EXIT_WAIT_S = 30.0


def _after_rank0(code: int) -> None:
    """On a rank other than 0, leave the exit to rank 0 (at most ``_RANK_EXIT_WAIT_S``).

    Bad input fails every rank at the same point; torchrun stops the others as
    soon as one exits with an error, so a rank exiting before rank 0 could
    stop it before its one-line error is printed. Waiting here lets rank 0
    report, exit with the code, and torchrun end this rank.
    """
    if code and _rank() != 0:
        import time

        time.sleep(_RANK_EXIT_WAIT_S)


def handle_errors(fn: Callable) -> Callable:
    """BinclfError -> one line + exit 2; anything else -> one line + exit 1; --debug re-raises.

    Ctrl-C exits 130 saying which outputs, if any, were already complete
    (:func:`binclf.io.atomic.track` records every committed write).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        from binclf.io.atomic import track

        debug = debug or bool(os.environ.get("BINCLF_DEBUG"))
        with track() as written, _only_rank0_speaks(debug):
            try:
                result = fn(*args, **kwargs)
                if debug and "torch" in sys.modules:
                    from binclf import runtime

                    _note(runtime.describe())  # which fast path ran (threads, kernels, compile), nanoGPT-style
                return result
            except BinclfError as exc:
                if debug:
                    raise
                _fail(_one_line(str(exc)), debug=debug)
            except KeyboardInterrupt:
                if debug:
                    raise
                if written:
                    done = ", ".join(str(p) for p in dict.fromkeys(written))
                    _fail(f"interrupted after {done} was written: it is complete and usable", debug=debug, code=130)
                _fail("interrupted; nothing was written", debug=debug, code=130)
            except BrokenPipeError:
                # The reader went away (`binclf predict ... | head`): stop quietly, as shell tools do.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                sys.exit(141)
            except (click.exceptions.Exit, click.ClickException, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - the last line of defence
                if debug:
                    raise
                _fail(f"unexpected {type(exc).__name__}: {_one_line(str(exc))}", debug=debug, code=1)

    return click.option(
        "--debug", is_flag=True, help="Show the full traceback on errors, and the fast path used (threads, kernels)."
    )(wrapper)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _split_names(values: Sequence[str]) -> tuple[str, ...]:
    """``--keep a,b --keep c`` -> ('a', 'b', 'c')."""
    out: list[str] = []
    for v in values:
        out.extend(part.strip() for part in v.split(",") if part.strip())
    return tuple(out)


class LibraryChoice(click.Choice):
    """A click choice whose values are a library constant, imported on first use (``"module:NAME"``).

    The CLI restates no list: ``--loss`` offers :data:`binclf.nn.losses.LOSS_NAMES`, and
    importing the CLI stays free of torch until an option needs the list.
    """

    def __init__(self, ref: str, *, prefix: Sequence[str] = ()) -> None:
        self._ref = ref
        self._prefix = tuple(prefix)
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        import importlib

        module, name = self._ref.split(":")
        return (*self._prefix, *getattr(importlib.import_module(module), name))


class OneLineErrors(click.Group):
    """Usage errors (unknown option, bad choice, missing argument) as one ``error:`` line, exit 2."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        # The raw arguments, for `train --nproc`, which runs the same command on each rank.
        extra.setdefault("obj", {"argv": list(sys.argv[1:] if args is None else args)})
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            hint = ""
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and ctx is not None:
                hint = f" (see {ctx.command_path} --help)"
            click.echo(f"error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(exc.exit_code)
        if isinstance(result, int) and not isinstance(result, bool):
            sys.exit(result)  # click.exceptions.Exit (--help, --version) returns its code
        sys.exit(0)


# -- the group ----------------------------------------------------------------------------
@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="binclf")
def main() -> None:
    """Binary classification with PyTorch, done right.

    \b
    binclf train data.csv --target COL     train, calibrate, choose a threshold, save a bundle
    binclf predict MODEL data.csv -o out   probabilities and decisions for new rows
    binclf evaluate MODEL labelled.csv     metrics on labelled data
    binclf info MODEL                      what a bundle holds
    binclf doctor net.py:Net --data d.csv  find the classic bugs in your own PyTorch model
    binclf demo                            the whole flow on a small table shipped with binclf
    """
    warnings.showwarning = _warning  # the entry point's one process-wide setting: warnings print as one line


# -- train --------------------------------------------------------------------------------
_TRAIN_OPTIONS = [
    click.option("--target", "-t", help="The yes/no column to predict."),
    click.option("--positive", help="Which of the target's two values is the positive class."),
    click.option("--out", "-o", type=click.Path(path_type=Path), help="Bundle directory [default: <data>-model]."),
    click.option("--force", is_flag=True, help="Replace an existing bundle (never a directory that is not one)."),
    click.option("--model", type=LibraryChoice("binclf.train.pipeline:MODEL_CHOICES"), default="auto",
                 show_default=True),
    click.option("--seed", default="0", show_default=True, metavar="INT",
                 help="Seed for splits, initialisation, batches."),
    click.option("--sep", help="CSV delimiter, one character [default: sniffed]."),
    click.option("--encoding", help="Text encoding of CSV files, e.g. latin-1 [default: utf-8]."),
    click.option("--drop", multiple=True, help="Column(s) to leave out (repeat or comma-separate)."),
    click.option("--categorical", multiple=True, help="Column(s) to treat as categories."),
    click.option("--numeric", multiple=True, help="Column(s) to treat as numbers."),
    click.option("--text", multiple=True, help="Column(s) to treat as free text (word and character n-grams)."),
    click.option("--text-encoder", type=click.Choice(["tfidf", "wordllama"]), default="tfidf", show_default=True,
                 help="What the networks read of text: TF-IDF's SVD projection, or wordllama's embeddings (extra 'text')."),
    click.option("--drop-missing-target", is_flag=True, help="Drop rows whose target is missing (else an error)."),
    click.option("--valid", "valid_path", type=click.Path(path_type=Path), help="Validation table (else split off)."),
    click.option("--test", "test_path", type=click.Path(path_type=Path), help="Test table (else split off)."),
    click.option("--calibration", type=LibraryChoice("binclf.decide.calibration:CALIBRATION_METHODS", prefix=["auto"]),
                 default="auto", show_default=True),
    click.option("--objective", default="f1", show_default=True,
                 help="Threshold objective: f1, fbeta:B, youden, balanced_accuracy, accuracy, mcc, cost:C_FP,C_FN, "
                 "precision:P, recall:R, fpr:A."),
    click.option("--abstain-precision", metavar="P",
                 help="Add an abstain band with this precision (in (0, 1]) on both sides."),
    click.option("--loss", type=LibraryChoice("binclf.nn.losses:LOSS_NAMES"), default="bce", show_default=True),
    click.option("--pos-weight", help="Weight of the positive class in the loss: a number > 0 or 'balanced'."),
    click.option("--sampler", type=click.Choice(["balanced"]), help="Draw class-balanced batches."),
    click.option("--max-epochs", default="200", show_default=True, metavar="INT"),
    click.option("--lr", default="0.001", show_default=True, metavar="FLOAT", help="Learning rate (> 0)."),
    click.option("--batch-size", default="auto", show_default=True, metavar="INT|auto"),
    click.option("--no-report", is_flag=True, help="Do not write report.html."),
    click.option("--threads", type=click.IntRange(1), default=None,
                 help="Torch threads for training, at most the cores and OMP_NUM_THREADS "
                 "[default: measured per fit: the fastest count, fewer while other processes are busy; "
                 "1 for small networks]."),
    # Images (DATA is a folder of class subfolders, or a CSV with --image-column): see binclf.cli_images.
    click.option("--image-column", help="Images: the CSV column of image paths (relative to the CSV)."),
    click.option("--image-size", type=click.IntRange(8, 1024), help="Images: square side to resize to [default: from the data]."),
    click.option("--no-flip", is_flag=True, help="Images: no random flips (orientation matters: digits, text)."),
    click.option("--skip-bad-images", is_flag=True, help="Images: skip unreadable files (up to 1%) instead of failing."),
    # Data larger than memory (DATA may be a directory of Parquet files): see binclf.train.stream.
    click.option("--memory", metavar="SIZE",
                 help="Memory budget, e.g. 500MB or 4GB; a table that would not fit is streamed [default: half the available RAM]."),
    click.option("--stream", is_flag=True, help="Stream the data from disk in batches even if it would fit in memory."),
    click.option("--checkpoint-dir", type=click.Path(path_type=Path), help="Streaming: save the training state here every epoch."),
    click.option("--resume", is_flag=True, help="Streaming: continue the run checkpointed in --checkpoint-dir."),
    click.option("--id-column", help="Streaming: split rows by a hash of this column [default: of the whole row]."),
    # Several processes: binclf.dist (torchrun); tables only.
    click.option("--nproc", type=click.IntRange(1), metavar="N",
                 help="Train data-parallel on N processes of this machine (torchrun --standalone); see the README."),
    click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                 help="Train on the CPU or a CUDA GPU (one per process under torchrun)."),
]


def _train_options(fn: Callable) -> Callable:
    for option in reversed(_TRAIN_OPTIONS):
        fn = option(fn)
    return fn


def _checked_train_options(kw: dict[str, Any]) -> dict[str, Any]:
    """Every option of ``train`` validated and converted (binclf.validate), before any file is read.

    All bad options are reported together, in one line.
    """
    from binclf import validate as v
    from binclf.errors import ConfigError

    checks: dict[str, Callable[[Any], Any]] = {
        "seed": lambda x: v.check_int(x, name="--seed", low=0, high=2**32 - 1, example="0"),
        "sep": v.check_sep,
        "encoding": v.check_encoding,
        "objective": v.check_objective,
        "abstain_precision": lambda x: None if x is None else v.check_number(
            x, name="--abstain-precision", low=0.0, high=1.0, low_open=True, example="0.9"),
        "pos_weight": v.check_pos_weight,
        "max_epochs": lambda x: v.check_int(x, name="--max-epochs", low=1, example="50"),
        "lr": lambda x: v.check_number(x, name="--lr", low=0.0, low_open=True, example="0.001"),
        "batch_size": v.check_batch_size,
    }
    checked, problems = dict(kw), []
    for key, check in checks.items():
        try:
            checked[key] = check(kw[key])
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("; also ".join(problems))
    return checked


@main.command()
@click.argument("data", type=click.Path(path_type=Path), required=False)
@_train_options
@click.option("--demo", is_flag=True, help=f"Train on the demo table shipped with binclf ({DEMO_TABLE}).")
@handle_errors
def train(data: Path | None, demo: bool, **kw: Any) -> None:
    """Train a calibrated model on DATA (CSV or Parquet) and save a bundle."""
    threads = kw.pop("threads")
    if threads is None:
        return _train_command(data, demo, kw)
    from binclf import runtime

    # The user's count holds for every fit inside (binclf.runtime: restored after, never above the ceiling).
    with runtime.session(purpose="train", threads=threads, pinned=True):
        return _train_command(data, demo, kw)


def _train_command(data: Path | None, demo: bool, kw: dict[str, Any]) -> None:
    if demo:
        # The other options (--max-epochs, --model ...) apply to the demo's training too.
        _run_demo(out=kw.pop("out"), force=kw.pop("force"), seed=kw.pop("seed"), train_kw=kw)
        return None
    if data is None:
        raise click.UsageError("missing DATA: pass a CSV or Parquet file (or --demo)")
    from binclf.cli_images import train_images_command, wants_images

    # Every option before any data is read: a typo fails in a blink.
    kw = _checked_train_options(kw)
    nproc = kw.pop("nproc")
    from binclf.io.dataset import is_parquet_dataset

    if wants_images(data, kw) and not (is_parquet_dataset(data) or kw["stream"]):
        from binclf.dist.context import launched

        if (nproc or 1) > 1 or launched() or kw["device"] != "cpu":
            from binclf.errors import ConfigError

            raise ConfigError("images train in one process on the CPU: drop --nproc / --device (and torchrun)")
        return train_images_command(data, kw)
    if not kw["target"]:
        raise click.UsageError("missing --target: name the yes/no column to predict")
    if (nproc or 1) > 1:
        from binclf.dist.launch import launch_train, strip_nproc

        argv = click.get_current_context().find_root().obj["argv"]
        debug = bool(os.environ.get("BINCLF_DEBUG")) or "--debug" in argv
        sys.exit(launch_train(nproc, strip_nproc(argv[argv.index("train") + 1 :]), debug=debug))
    from binclf import dist

    with dist.init(device=kw["device"]):  # torchrun's process group, or nothing in one process
        return _train(data, **kw)


def _train(data: Path, **kw: Any) -> Any:
    from binclf.bundle import BUNDLE_LAYOUT, REPORT_FILE
    from binclf.dist import main_only
    from binclf.io.atomic import check_output_dir
    from binclf.io.tables import read_table

    # The output directory before any data is read (the options are checked by the caller);
    # rank 0 writes it, so rank 0 checks it and every rank learns the outcome.
    out: Path = kw["out"] or Path(f"{_stem(data)}-model")
    main_only(check_output_dir)(out, layout=BUNDLE_LAYOUT, force=kw["force"], option="--out",
                                inputs=[data, kw["valid_path"], kw["test_path"]], extra=(REPORT_FILE,))

    from binclf.train.pipeline import TrainOptions, train_table

    options = TrainOptions(
        target=kw["target"],
        positive=kw["positive"],
        model=kw["model"],
        drop=_split_names(kw["drop"]),
        categorical=_split_names(kw["categorical"]),
        numeric=_split_names(kw["numeric"]),
        text=_split_names(kw["text"]),
        text_encoder=kw["text_encoder"],
        drop_missing_target=kw["drop_missing_target"],
        seed=kw["seed"],
        calibration=kw["calibration"],
        objective=kw["objective"],
        abstain_precision=kw["abstain_precision"],
        loss=kw["loss"],
        pos_weight=kw["pos_weight"],
        sampler=kw["sampler"],
        max_epochs=kw["max_epochs"],
        lr=kw["lr"],
        batch_size=kw["batch_size"],
        device=kw["device"],
    )
    streamed = _streamed_training(data, options, kw, out)
    if streamed is not None:
        return streamed
    read = functools.partial(read_table, sep=kw["sep"], encoding=kw["encoding"])
    if data.is_dir():  # a directory of Parquet files small enough to hold
        from binclf.io.dataset import TableSource

        df = TableSource.open(data).read_all()
    else:
        df = read(data)
    valid_df = read(kw["valid_path"]) if kw["valid_path"] else None
    test_df = read(kw["test_path"]) if kw["test_path"] else None
    header = [f"binclf {__version__}: {data} ({len(df)} rows, {len(df.columns)} columns), target {options.target!r}"]

    def log(message: str) -> None:
        # The header waits for the first notice: bad input fails with its one error line only.
        while header:
            _say(header.pop())
        _note(message)

    # train_table validates the table (target, column roles, finite numbers) before training.
    # It is handed the only reference to the table, so the table's memory goes once
    # the model inputs are made (binclf.train.memory counts on it).
    table = [df]
    del df
    result = train_table(table.pop, options, valid_df=valid_df, test_df=test_df, source=str(data), log=log)
    return _finish_training(result, out, kw)


def _finish_training(result: Any, out: Path, kw: dict[str, Any]) -> Any:
    """Print the decision and metrics, write the bundle and report (in-memory and streamed training alike)."""
    from binclf.bundle import REPORT_FILE
    from binclf.cli_format import print_training
    from binclf.dist import main_only

    @main_only  # under torchrun: rank 0 prints and writes; the others wait for the outcome
    def write() -> None:
        print_training(result)
        extra = {}
        if not kw["no_report"]:
            from binclf.report import render_training_report

            extra[REPORT_FILE] = render_training_report(result).encode("utf-8")
        result.predictor.save(out, force=kw["force"], extra_files=extra)
        click.echo(f"bundle written to {out}/ (model.safetensors + bundle.json)")
        if extra:
            click.echo(f"report written to {out / REPORT_FILE}")

    write()
    return result, out


def _streamed_training(data: Path, options: Any, kw: dict[str, Any], out: Path) -> Any:
    """Train by streaming when the table would not fit in --memory (or --stream); None: train in memory."""
    from binclf import dist
    from binclf.errors import ConfigError
    from binclf.io.dataset import TableSource
    from binclf.train import memory
    from binclf.train import stream as st

    ctx = dist.current()
    budget = st.parse_memory(kw["memory"]) if kw["memory"] else st.default_memory()
    # --memory is this machine's: its processes share it (in memory, every one holds the whole table).
    sharing = ctx.local_world_size if ctx.distributed else 1
    decoded = None
    if data.is_dir() or data.is_file():  # never open a pipe or device here: the reader words those
        try:
            decoded = memory.decoded_bytes(data)
        except Exception:  # noqa: BLE001 - an unreadable file: reading it below words the failure
            decoded = None
    if not kw["stream"] and (decoded is None or not st.should_stream(decoded, budget // sharing)):
        if kw["checkpoint_dir"] or kw["resume"] or kw["id_column"]:
            raise ConfigError("--checkpoint-dir, --resume and --id-column apply to streamed training; add --stream")
        return None
    if kw["valid_path"] or kw["test_path"]:
        raise ConfigError("streamed training splits its own validation and test rows; leave out --valid / --test")
    if kw["resume"] and not kw["checkpoint_dir"]:
        raise ConfigError("--resume needs --checkpoint-dir (where the interrupted run saved its state)")
    source = TableSource.open(data, sep=kw["sep"], encoding=kw["encoding"])
    rows = f"{source.num_rows} rows" if source.num_rows is not None else "rows not counted"
    _say(f"binclf {__version__}: {data} ({rows}, {len(source.columns)} columns), target {options.target!r}")
    why = "as asked (--stream)" if kw["stream"] else (
        f"the table decodes to about {_size(decoded)} and training it in memory would need about "
        f"{_size(memory.in_memory_peak_bytes(decoded) * sharing)}"
        f"{f' ({sharing} processes, each holding it)' if sharing > 1 else ''}, more than --memory {_size(budget)}"
    )
    _note(f"streaming from disk {why}; streaming trains a single network "
          "(not the in-memory default's cross-fitted ensemble)")
    stream_options = st.StreamOptions(memory_bytes=budget // sharing, id_column=kw["id_column"],
                                      checkpoint_dir=None if kw["checkpoint_dir"] is None else str(kw["checkpoint_dir"]),
                                      resume=kw["resume"])
    result = st.train_stream(source, options, stream_options, log=_note, data_parallel=dist.data_parallel())
    done = _finish_training(result, out, kw)
    peaks = dist.all_gather_object(memory.peak_rss_bytes())  # every rank's, rank 0 prints
    if len(peaks) == 1:
        click.echo(f"peak memory: {_size(peaks[0])} RSS (--memory {_size(budget)})")
    else:
        click.echo(f"peak memory: {_size(max(peaks))} RSS per process, the largest of {len(peaks)} "
                   f"({', '.join(_size(p) for p in peaks)}; --memory {_size(budget)} for {sharing} on this machine)")
    return done


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}" if n < 100 else f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.0f} GB"


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".gz", ".csv", ".tsv", ".txt", ".parquet", ".pq"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return name or "model"


# -- predict / evaluate / info -------------------------------------------------------------------
def _load(bundle: Path) -> Any:
    """The bundle's Predictor, loaded and verified once (format, version, weights' hash)."""
    from binclf.predictor import Predictor

    return Predictor.load(bundle)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="Output file (.csv, .tsv, .parquet or .pq) [default: CSV on stdout].")
@click.option("--keep", multiple=True, help="Input column(s) to copy into the output (repeat or comma-separate).")
@click.option("--threshold", metavar="T", help="Override the bundle's threshold (a number in [0, 1]).")
@click.option("--sep", help="CSV delimiter of DATA, one character [default: sniffed].")
@click.option("--encoding", help="Text encoding of a CSV DATA, e.g. latin-1 [default: utf-8].")
@click.option("--batch-rows", default="65536", show_default=True, metavar="INT",
              help="Rows read, predicted and written at a time (memory stays flat).")
@click.option("--skip-bad-images", is_flag=True, help="Images: skip unreadable files (up to 1%) instead of failing.")
@handle_errors
def predict(bundle: Path, data: Path, output: Path | None, keep: Sequence[str], threshold: str | None,
            sep: str | None, encoding: str | None, batch_rows: str, skip_bad_images: bool) -> None:
    """Write `probability` and `prediction` for every row of DATA (or every image of a folder)."""
    from binclf import validate as v
    from binclf.cli_images import is_image_bundle, predict_images_command

    threshold_value = v.check_threshold(threshold)
    sep = v.check_sep(sep)
    encoding = v.check_encoding(encoding)
    rows = v.check_int(batch_rows, name="--batch-rows", low=1, example="65536")
    if output is not None:
        from binclf.predictor import check_prediction_output

        check_prediction_output(output, source=data, option="--output")
    if is_image_bundle(bundle):
        return predict_images_command(bundle, data, output, threshold=threshold_value, skip_bad=skip_bad_images)
    predictor = _load(bundle)
    notices: list[str] = []
    stats = predictor.predict_file(
        data, output, keep=_split_names(keep), threshold=threshold_value, batch_rows=rows, sep=sep,
        encoding=encoding, notices=notices,
    )
    for n in notices:
        _note(n)
    if output is not None:
        rate = stats["rows"] / stats["seconds"] if stats["seconds"] > 0 else float("inf")
        _say(f"wrote {stats['rows']} predictions to {output} ({stats['seconds']:.2f} s, {rate:,.0f} rows/s)")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--threshold", metavar="T", help="Evaluate at this threshold (in [0, 1]) instead of the bundle's.")
@click.option("--sep", help="CSV delimiter of DATA, one character [default: sniffed].")
@click.option("--encoding", help="Text encoding of a CSV DATA, e.g. latin-1 [default: utf-8].")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--skip-bad-images", is_flag=True, help="Images: skip unreadable files (up to 1%) instead of failing.")
@handle_errors
def evaluate(bundle: Path, data: Path, threshold: str | None, sep: str | None, encoding: str | None,
             as_json: bool, skip_bad_images: bool) -> None:
    """Metrics of the bundle's model on labelled DATA (or a labelled folder of images)."""
    from binclf import validate as v
    from binclf.cli_images import evaluate_images_command, is_image_bundle
    from binclf.cli_format import metrics_table
    from binclf.io.tables import read_table

    threshold_value = v.check_threshold(threshold)
    sep, encoding = v.check_sep(sep), v.check_encoding(encoding)
    if is_image_bundle(bundle):
        return evaluate_images_command(bundle, data, threshold=threshold_value, as_json=as_json,
                                       skip_bad=skip_bad_images)
    predictor = _load(bundle)
    df = read_table(data, sep=sep, encoding=encoding)
    notices: list[str] = []
    result = predictor.evaluate(df, threshold=threshold_value, source=str(data), notices=notices,
                                return_intervals=not as_json)
    for n in notices:
        _note(n)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    metrics, intervals = result
    click.echo(metrics_table(metrics, intervals, title=f"metrics on {data} ({int(metrics['n'])} rows)"))


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print bundle.json as it is.")
@handle_errors
def info(bundle: Path, as_json: bool) -> None:
    """What a bundle holds: schema, model, threshold, training metrics, versions."""
    from binclf.cli_images import info_images_command, is_image_bundle

    if is_image_bundle(bundle) and not as_json:
        return info_images_command(bundle)
    predictor = _load(bundle)
    meta = predictor.to_meta()
    if as_json:
        click.echo(json.dumps(meta, indent=2, sort_keys=True))
        return
    from binclf.cli_format import print_bundle_info

    print_bundle_info(bundle, predictor)


# -- report -----------------------------------------------------------------------------------------
REPORT_EXTENSIONS = (".html", ".htm")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), help="HTML file [default: DATA's name + -report.html].")
@click.option("--sep", help="CSV delimiter of DATA, one character [default: sniffed].")
@click.option("--encoding", help="Text encoding of a CSV DATA, e.g. latin-1 [default: utf-8].")
@click.option("--seed", default="0", show_default=True, metavar="INT", help="Seed of the bootstrap intervals.")
@handle_errors
def report(bundle: Path, data: Path, output: Path | None, sep: str | None, encoding: str | None, seed: str) -> None:
    """Write a self-contained HTML report of the bundle's model on labelled DATA.

    ROC and PR curves, reliability before and after calibration, score
    histograms, metrics against the threshold, the confusion matrix, the data
    summary and the training curve, in one file that opens without a server.
    An existing OUTPUT is replaced (a report is cheap to regenerate), unless it
    is DATA or a file of a bundle; it is written to a temporary name and
    renamed, so a failure leaves no half file.
    """
    from binclf import validate as v
    from binclf.bundle import BUNDLE_LAYOUT
    from binclf.io.atomic import check_output_file, write_file
    from binclf.io.tables import read_table

    sep, encoding = v.check_sep(sep), v.check_encoding(encoding)
    seed_value = v.check_int(seed, name="--seed", low=0, high=2**32 - 1, example="0")
    output = check_output_file(
        output or Path(f"{_stem(data)}-report.html"), option="--output", extensions=REPORT_EXTENSIONS,
        inputs=[data], containers=[bundle], layouts=(BUNDLE_LAYOUT,),
    )
    from binclf.report import render_bundle_report

    predictor = _load(bundle)
    df = read_table(data, sep=sep, encoding=encoding)
    page = render_bundle_report(predictor, df, source=str(data), seed=seed_value)
    write_file(output, page.encode("utf-8"))
    _say(f"report on {len(df)} rows of {data} written to {output}")


# -- demo -----------------------------------------------------------------------------------------
@main.command()
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Bundle directory [default: binclf-demo-model].")
@click.option("--force", is_flag=True, help="Replace an existing demo bundle.")
@click.option("--seed", default="0", show_default=True, metavar="INT")
@handle_errors
def demo(out: Path | None, force: bool, seed: str) -> None:
    """Train, save, reload and predict on a small real table shipped with binclf."""
    _run_demo(out=out, force=force, seed=seed)


def _run_demo(*, out: Path | None, force: bool, seed: int | str, train_kw: dict[str, Any] | None = None) -> None:
    out = out or Path("binclf-demo-model")
    with resources.as_file(resources.files("binclf") / "datasets" / DEMO_TABLE) as table:
        _say(f"demo: orange-juice brand choice ({DEMO_TABLE}, shipped with binclf); predicting {DEMO_TARGET!r}")
        # invoke() fills every other option with its default, as the command line would.
        kw = {**(train_kw or {}), "data": table, "target": DEMO_TARGET, "out": out, "force": force, "seed": seed}
        _, bundle = click.get_current_context().invoke(train, **kw)
        predictor = _load(bundle)
        from binclf.io.tables import read_table

        rows = read_table(table).head(5)
        frame = predictor.predict_frame(rows, keep=[DEMO_TARGET])
    click.echo(f"\nreloaded {bundle}/ and predicted the first 5 rows of {DEMO_TABLE}:")
    click.echo(frame.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    click.echo(f"\nnext: binclf predict {bundle} YOUR.csv -o predictions.csv")


# -- doctor ----------------------------------------------------------------------------------------
@main.command()
@click.argument("model_spec", metavar="FILE.py:NAME")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), help="CSV/Parquet with a batch.")
@click.option("--target", "-t", required=True, help="The yes/no column.")
@click.option("--positive", help="Which of the target's two values is the positive class [default: as train chooses].")
@click.option("--loss", "loss_spec", metavar="FILE.py:NAME", help="The loss you train with [default: BCEWithLogitsLoss].")
@click.option("--batch-size", type=click.IntRange(2), default=512, show_default=True, help="Rows to check on.")
@click.option("--probe", is_flag=True, help="Also run a short training probe (learning rate too high?).")
@click.option("--seed", type=int, default=0, show_default=True)
@handle_errors
def doctor(model_spec: str, data_path: Path, target: str, positive: str | None, loss_spec: str | None,
           batch_size: int, probe: bool, seed: int) -> None:
    """Find classic binary-classification bugs in your own PyTorch model.

    NAME is an nn.Module class or a factory function in FILE.py. Exit code 1
    when an error-level finding exists (so it can gate CI), else 0.
    """
    from binclf import doctor as doctor_module

    report = doctor_module.run(
        model_spec, data_path=data_path, target=target, positive=positive, loss_spec=loss_spec,
        batch_size=batch_size, probe=probe, seed=seed,
    )
    click.echo(str(report))
    sys.exit(1 if report.has_errors else 0)


# -- export ----------------------------------------------------------------------------------------
@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="The ONNX file to write.")
@handle_errors
def export(bundle: Path, output: Path) -> None:
    """Write BUNDLE as one ONNX graph: raw columns (or resized images) in, `probability` and `label` out."""
    from binclf.export import export_onnx

    sig = export_onnx(bundle, output)
    for d in sig["inputs"]:
        if "about" in d:  # an image bundle: one tensor input
            click.echo(f"input  {d['name']}: {d['type']} [{', '.join(map(str, d['shape']))}] ({d['about']})")
        else:
            click.echo(f"input  {d['name']}: {d['type']} [N] (missing: {d['missing']})")
    prob, label = sig["outputs"]
    click.echo(f"output probability: float32 [N] ({prob['meaning']})")
    click.echo(f"output label: string [N] (one of {', '.join(map(repr, label['values']))}; "
               f"threshold {sig['threshold']:.6g})")
    _say(f"wrote {output} (signature in its metadata_props['binclf.signature'])")


# -- serve -----------------------------------------------------------------------------------------
@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Server processes, each with its own copy of the model (use one per core).")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True, help="Torch threads per worker.")
@click.option("--max-body", default="10MB", show_default=True, help="Largest request body (larger: 413).")
@handle_errors
def serve(bundle: Path, host: str, port: int, workers: int, threads: int, max_body: str) -> None:
    """Serve BUNDLE over HTTP: POST /predict, POST /invocations (MLflow), /health, /metadata, /metrics.

    An image bundle's POST /predict takes image files (multipart field `file` or `files`),
    {"images": [base64, ...]} or one image/* body.
    """
    from binclf.serve import run

    run(bundle, host=host, port=port, workers=workers, threads=threads, max_body=max_body)


if __name__ == "__main__":  # pragma: no cover
    main()
