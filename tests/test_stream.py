"""Streaming (out-of-core) training: sources, one-pass statistics, hash split, checkpoints, bad input, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from binclf.data.preprocessing import Preprocessor
from binclf.data.schema import infer_schema
from binclf.data.sketch import QuantileSketch, TableStats, row_keys, split_of
from binclf.errors import ConfigError, DataError
from binclf.io.dataset import TableSource
from binclf.predictor import Predictor
from binclf.train.memory import in_memory_peak_bytes
from binclf.train.pipeline import TrainOptions
from binclf.train.stream import (
    StreamOptions,
    _keep_share,
    _position_keys,
    _split_codes,
    _SplitCache,
    collect_stats,
    parse_memory,
    should_stream,
    train_stream,
)

N_FILES, ROWS = 4, 700  # 2,800 rows in 8 row groups, each bigger than the batches read below


def _frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    x1 = rng.normal(size=n)
    x2 = rng.lognormal(size=n)
    x2[rng.random(n) < 0.1] = np.nan
    c = rng.choice(["red", "green", "blue", "rare"], size=n, p=[0.5, 0.3, 0.199, 0.001]).astype(object)
    c[rng.random(n) < 0.05] = None
    logit = 1.5 * x1 - 0.5 * np.log(np.nan_to_num(x2, nan=1.0)) + (c == "red") - 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "c": c, "y": y})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data") / "ds"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_FILES):
        _frame(rng, ROWS).to_parquet(d / f"part-{i}.parquet", row_group_size=ROWS // 2)
    return d


def _options(**kw) -> TrainOptions:
    return TrainOptions(**{"target": "y", "model": "mlp", "max_epochs": 4, "n_boot": 20, **kw})


def _stream(**kw) -> StreamOptions:
    return StreamOptions(**{"memory_bytes": 1 << 30, "batch_rows": 128, "shuffle_rows": 1024, **kw})


def _stats(source: TableSource, *, batch_rows: int = 128, rank: int = 0, world_size: int = 1, k: int = 65536):
    schema, _ = infer_schema(source.head(10_000), target="y")
    stats = collect_stats(
        source, schema, _options(), _stream(sketch_size=k, rank=rank, world_size=world_size),
        columns=source.columns, key_columns=source.columns, batch_rows=batch_rows,
    )
    return schema, stats


def test_should_stream_and_memory_sizes() -> None:
    """The decision compares the measured in-memory peak with the budget; sizes parse in units of 1024."""
    need = in_memory_peak_bytes(100 << 20)
    assert should_stream(100 << 20, need - 1) and not should_stream(100 << 20, need)
    # The measured factor, not a guess: a table of 100 MB needs well over 300 MB in memory.
    assert need > 3 * (100 << 20)
    assert parse_memory("500MB") == 500 << 20 and parse_memory("4GB") == 4 << 30 and parse_memory("1.5g") == 3 << 29
    with pytest.raises(ConfigError, match="--memory must be a size such as 500MB"):
        parse_memory("lots")


def test_source_units_and_decoded_size(dataset: Path) -> None:
    """Every row group is a unit; ranks read disjoint shards covering all rows; size from the footers."""
    source = TableSource.open(dataset)
    assert len(source.units) == 2 * N_FILES and source.num_rows == N_FILES * ROWS
    whole = source.read_all()
    assert 0.5 < source.decoded_bytes / whole.memory_usage(deep=False).sum() < 3
    shards = [pd.concat(source.iter_batches(batch_rows=100, rank=r, world_size=2)) for r in (0, 1)]
    assert sum(len(s) for s in shards) == len(whole)
    assert set(shards[0].x1).isdisjoint(shards[1].x1)


def test_statistics_equal_in_memory(dataset: Path) -> None:
    """Below the sketch size the streamed preprocessing equals the in-memory fit on the same training rows."""
    source = TableSource.open(dataset)
    schema, stats = _stats(source)
    df = source.read_all()
    split = split_of(row_keys(df, columns=df.columns), valid_fraction=0.2, test_fraction=0.2, seed=0)
    for numeric in ("robust", "standard", "quantile"):
        streamed = Preprocessor(schema=schema, numeric=numeric).fit_from_summaries(
            numeric=stats.numeric, categorical=stats.categorical
        )
        memory = Preprocessor(schema=schema, numeric=numeric).fit(df[split == 0].reset_index(drop=True))
        a, b = streamed.to_dict(), memory.to_dict()
        for sa, sb in zip(a["numeric_"], b["numeric_"]):
            assert sa.keys() == sb.keys() and sa["indicator"] == sb["indicator"] is (sa["name"] == "x2")
            for key in ("median", "center", "scale", "fill"):
                assert sa[key] == pytest.approx(sb[key], rel=1e-9, abs=1e-12), (numeric, sa["name"], key)
        assert a["categorical_"] == b["categorical_"]
    assert stats.labels.rows(0) == int((split == 0).sum())


def test_sketch_within_its_error_and_mergeable(dataset: Path) -> None:
    """A sketch smaller than the column: its quartiles' ranks within the DKW bound; merging shards is exact."""
    source = TableSource.open(dataset)
    k = 256
    _, whole = _stats(source, k=k)
    _, r0 = _stats(source, k=k, rank=0, world_size=2)
    _, r1 = _stats(source, k=k, rank=1, world_size=2)
    merged = TableStats.from_arrays(r0.to_arrays()).merge(TableStats.from_arrays(r1.to_arrays()))
    for a, b in zip(whole.numeric, merged.numeric):
        assert np.array_equal(a.sample(), b.sample()) and a.n == b.n and a.n_missing == b.n_missing
        assert a.mean == pytest.approx(b.mean) and a.std == pytest.approx(b.std)
    assert whole.categorical[0].counts() == merged.categorical[0].counts()
    assert whole.labels.series().equals(merged.labels.series())
    assert np.array_equal(whole.missing_cells, merged.missing_cells) and whole.missing_cells.sum() > 0
    df = source.read_all()
    train = split_of(row_keys(df, columns=df.columns), valid_fraction=0.2, test_fraction=0.2, seed=0) == 0
    bound = np.sqrt(np.log(2 / 1e-3) / (2 * k))
    for s in whole.numeric:
        true = np.sort(df.loc[train, s.name].dropna().to_numpy())
        assert len(s.sample()) == k < len(true)
        for q in (0.25, 0.5, 0.75):
            rank = np.searchsorted(true, np.quantile(s.sample(), q)) / len(true)
            assert abs(rank - q) < bound, (s.name, q, rank)


def test_quantile_sketch_is_order_free() -> None:
    """The same values in any batching and order give the same sample."""
    rng = np.random.default_rng(1)
    x, keys = rng.normal(size=5000), rng.integers(0, 2**63, size=5000).astype(np.uint64)
    a, b = QuantileSketch("x", k=300), QuantileSketch("x", k=300)
    a.update(x, keys)
    order = rng.permutation(5000)
    for part in np.array_split(order, 17):
        b.update(x[part], keys[part])
    assert np.array_equal(a.sample(), b.sample()) and a.n == b.n == 5000


def test_split_is_stable(dataset: Path) -> None:
    """Each row's split is the same whatever the batch size and the order of the row groups."""
    source = TableSource.open(dataset)

    def splits(batch_rows: int, seed: int | None) -> pd.Series:
        df = pd.concat(source.iter_batches(batch_rows=batch_rows, seed=seed))
        s = split_of(row_keys(df, columns=source.columns), valid_fraction=0.2, test_fraction=0.2, seed=0)
        return pd.Series(s, index=df.x1.to_numpy()).sort_index()

    a, b = splits(97, None), splits(1000, 5)
    assert a.equals(b)
    share = np.bincount(a.to_numpy(), minlength=3) / len(a)
    assert np.allclose(share, [0.6, 0.2, 0.2], atol=0.05)


def test_batch_ids_name_the_same_rows_in_every_order(dataset: Path) -> None:
    """``(unit, first row)`` ids (what the split cache is keyed by) name the same rows whatever the order and batch size."""
    source = TableSource.open(dataset)

    def rows(batch_rows: int, seed: int) -> dict:
        out = {}
        for (unit, start), df in source.iter_batches(batch_rows=batch_rows, seed=seed, ids=True):
            for i, x in enumerate(df.x1.to_numpy()):
                out[(unit, start + i)] = x
        return out

    a, b = rows(128, 1), rows(97, 2)
    assert len(a) == source.num_rows and a == b


def test_split_cache_gives_back_the_codes_within_its_budget() -> None:
    """Packed 2 bits a row, codes (3 = no target) come back as computed, for batches cut anywhere; within the budget."""
    rng = np.random.default_rng(0)
    present = rng.random(1001) < 0.9
    codes = _split_codes(present, rng.integers(0, 3, size=int(present.sum())).astype(np.int8))
    assert set(np.unique(codes)) == {0, 1, 2, 3} and (codes[~present] == 3).all()
    calls: list[int] = []

    def compute(df: pd.DataFrame) -> np.ndarray:
        calls.append(len(df))
        return codes[: len(df)]

    cache = _SplitCache(max_bytes=4 * 63)  # rows 0..499 and 500..1000 of one unit: 2 planes x 63 bytes each
    cache.put(("u", 0), codes[:500])
    cache.put(("u", 500), codes[500:])
    assert cache.used == cache.max_bytes
    for start, n in [(0, 1001), (3, 97), (450, 100), (499, 2), (997, 4), (500, 501)]:
        assert np.array_equal(cache.get(("u", start), n), codes[start : start + n])
    assert cache.get(("u", 990), 20) is None and cache.get(("v", 0), 1) is None  # rows not stored
    cache.put(("w", 0), codes)  # no room left
    df = pd.DataFrame({"x": np.zeros(1001)})
    cache.codes(("w", 0), df, compute)
    cache.codes(("w", 0), df, compute)
    assert calls == [1001, 1001]


def test_transform_rows_equals_transforming_the_rows(dataset: Path) -> None:
    """``transform(df, rows=mask)`` is ``transform(df.loc[mask])``, what streaming used to copy per batch."""
    df = pd.read_parquet(next(dataset.glob("*.parquet")))
    schema, _ = infer_schema(df, target="y")
    prep = Preprocessor(schema=schema).fit(df)
    mask = np.random.default_rng(1).random(len(df)) < 0.6
    assert np.array_equal(prep.transform(df, rows=mask), prep.transform(df.loc[mask]))


def test_two_runs_identical_and_bundle_predicts(dataset: Path, tmp_path: Path) -> None:
    """Two streamed runs give the same split and model; the bundle saves, loads and predicts."""
    r1 = train_stream(dataset, _options(max_epochs=2), _stream())
    r2 = train_stream(dataset, _options(max_epochs=2), _stream(batch_rows=333))
    assert r1.summary["split_rows"] == r2.summary["split_rows"]
    assert r1.summary["split_rows"]["train"] + r1.summary["split_rows"]["valid"] + r1.summary["split_rows"]["test"] == 2800
    assert r1.metrics["roc_auc"] > 0.7
    r1.predictor.save(tmp_path / "m")
    df = pd.read_parquet(dataset / "part-1.parquet")
    p = Predictor.load(tmp_path / "m").predict_proba(df)
    assert p.shape == (len(df),) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p, r1.predictor.predict_proba(df), rtol=1e-6)


def test_interrupt_and_resume(dataset: Path, tmp_path: Path) -> None:
    """Ctrl-C after epoch 2 leaves a checkpoint; --resume finishes as an uninterrupted run would."""
    ck = tmp_path / "ck"

    def interrupt(trainer, log) -> None:
        if log["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_stream(dataset, _options(), _stream(checkpoint_dir=str(ck)), callbacks=[interrupt])
    assert (ck / "checkpoint.json").is_file()
    with pytest.raises(ConfigError, match="already holds a checkpoint; pass --resume"):
        train_stream(dataset, _options(), _stream(checkpoint_dir=str(ck)))
    resumed = train_stream(dataset, _options(), _stream(checkpoint_dir=str(ck), resume=True))
    straight = train_stream(dataset, _options(), _stream())
    assert [h["epoch"] for h in resumed.history] == [h["epoch"] for h in straight.history]
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in straight.history], rel=1e-5)
    df = pd.read_parquet(dataset / "part-2.parquet")
    resumed.predictor.save(tmp_path / "m")
    np.testing.assert_allclose(
        Predictor.load(tmp_path / "m").predict_proba(df), straight.predictor.predict_proba(df), rtol=1e-4, atol=1e-6
    )
    with pytest.raises(ConfigError, match="was made for other data or options"):
        train_stream(dataset, _options(lr=0.01), _stream(checkpoint_dir=str(ck), resume=True))


def test_gather_merges_ranks(dataset: Path) -> None:
    """Two ranks whose gather returns both shards' statistics fit the single-process preprocessing."""
    source = TableSource.open(dataset)
    schema, _ = infer_schema(source.head(10_000), target="y")
    shards = [
        collect_stats(source, schema, _options(), _stream(rank=r, world_size=2), columns=source.columns,
                      key_columns=source.columns, batch_rows=128).to_arrays()
        for r in (0, 1)
    ]
    single = train_stream(dataset, _options(max_epochs=1), _stream())
    ranked = train_stream(dataset, _options(max_epochs=1), _stream(rank=0, world_size=2), gather=lambda _a: shards)
    assert ranked.predictor.preprocessor.to_dict() == single.predictor.preprocessor.to_dict()
    assert ranked.summary["split_rows"] == single.summary["split_rows"]


def test_hive_partitions_and_id_column(tmp_path: Path) -> None:
    """Partition keys become a column; --id-column splits every row of one id the same way."""
    rng = np.random.default_rng(3)
    for region in ("north", "south"):
        (tmp_path / f"region={region}").mkdir()
        df = _frame(rng, 600)
        df["id"] = rng.integers(0, 150, size=len(df))  # about 8 rows per id
        df.to_parquet(tmp_path / f"region={region}" / "part.parquet", row_group_size=200)
    source = TableSource.open(tmp_path)
    assert source.columns[-1] == "region" and set(source.read_all().region) == {"north", "south"}
    result = train_stream(tmp_path, _options(max_epochs=1), _stream(id_column="id"))
    assert "id" not in result.predictor.schema.names and "region" in result.predictor.schema.names
    df = source.read_all()
    split = split_of(row_keys(df, columns=["id"]), valid_fraction=0.2, test_fraction=0.2, seed=0)
    assert (pd.Series(split).groupby(df.id.to_numpy()).nunique() == 1).all()
    assert result.summary["split_rows"]["test"] == int((split == 2).sum())


def test_csv_streams(dataset: Path, tmp_path: Path) -> None:
    """A CSV streams through the same path."""
    csv = tmp_path / "t.csv"
    TableSource.open(dataset).read_all().to_csv(csv, index=False)
    result = train_stream(csv, _options(max_epochs=2), _stream())
    assert sum(result.summary["split_rows"].values()) == N_FILES * ROWS


# -- bad input --------------------------------------------------------------------------------------
def _bad_dirs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    rng = np.random.default_rng(2)
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    _frame(rng, 200).to_parquet(schemas / "a.parquet")
    _frame(rng, 200).assign(x1=lambda d: d.x1.astype(str)).to_parquet(schemas / "b.parquet")
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for i in range(3):
        _frame(rng, 400).to_parquet(corrupt / f"p{i}.parquet", row_group_size=100)
    bad = corrupt / "p1.parquet"  # a damaged page header in its third row group: found while streaming
    offset = pq.read_metadata(bad).row_group(2).column(0).data_page_offset
    data = bytearray(bad.read_bytes())
    data[offset : offset + 16] = b"\xff" * 16
    bad.write_bytes(bytes(data))
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    _frame(rng, 200).to_parquet(garbage / "a.parquet")
    (garbage / "b.parquet").write_bytes(b"PAR1 not really parquet")
    return {
        "schemas": (schemas, r"b\.parquet: its columns differ from .*a\.parquet's \('x1': number in a.parquet, text here\)"),
        "empty": (empty, "the directory holds no Parquet files"),
        "corrupt": (corrupt, r"p1\.parquet: cannot read row group 2 .*the file is damaged"),
        "garbage": (garbage, r"b\.parquet: cannot read it as Parquet"),
    }


def test_bad_input_library(tmp_path: Path) -> None:
    """Mixed schemas, an empty directory, a damaged page mid-stream, a non-Parquet file: one DataError naming the file."""
    for path, message in _bad_dirs(tmp_path).values():
        with pytest.raises(DataError, match=message):
            train_stream(path, _options(max_epochs=1), _stream())


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.run([sys.executable, "-m", "binclf", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300, check=False)


def test_cli_stream_end_to_end(dataset: Path, tmp_path: Path) -> None:
    """`binclf train DIR --stream`: notes say it streams, a bundle that predicts, the peak memory last."""
    r = _cli("train", str(dataset), "--target", "y", "--stream", "--model", "mlp", "--max-epochs", "2", "--out", "m",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "streaming from disk as asked (--stream); streaming trains a single network" in r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("peak memory: ")
    assert (tmp_path / "m" / "bundle.json").is_file() and (tmp_path / "m" / "report.html").is_file()
    p = _cli("predict", "m", str(dataset / "part-0.parquet"), cwd=tmp_path)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == ROWS + 1
    # Too big for --memory: streams without being asked.
    r = _cli("train", str(dataset), "--target", "y", "--memory", "100KB", "--max-epochs", "1", "--out", "m2",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "more than --memory 100 KB" in r.stderr


def test_cli_bad_input_exit_2_no_bundle(tmp_path: Path) -> None:
    """Bad datasets: one error line naming the file, exit 2, no bundle written."""
    for name, (path, message) in _bad_dirs(tmp_path).items():
        r = _cli("train", str(path), "--target", "y", "--stream", "--out", f"out-{name}", cwd=tmp_path)
        assert r.returncode == 2, (name, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and len([x for x in lines if x.startswith("error")]) == 1
        assert "Traceback" not in r.stderr
        assert not (tmp_path / f"out-{name}").exists()


# -- several processes (torchrun; binclf.dist) ------------------------------------------------------
def test_units_are_dealt_balanced_by_rows() -> None:
    """Row groups of unequal sizes: the ranks' rows differ by at most one unit; equal sizes go round-robin."""
    from binclf.io.dataset import Unit, _balanced

    units = [Unit(Path(f"f{i}"), 0, n) for i, n in enumerate([100, 900, 300, 300, 500, 50, 400])]
    shards = _balanced(units, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(units)))
    rows = [sum(units[i].rows for i in s) for s in shards]
    assert abs(rows[0] - rows[1]) <= max(u.rows for u in units) and rows == [1300, 1250]
    assert _balanced([Unit(Path("f"), i, 10) for i in range(5)], 2) == [[0, 2, 4], [1, 3]]


def test_csv_shards_are_every_nth_row_of_each_batch(dataset: Path, tmp_path: Path) -> None:
    """A CSV on several ranks: each keeps every world_size-th row of each batch; disjoint, covering, balanced."""
    csv = tmp_path / "t.csv"
    TableSource.open(dataset).read_all().to_csv(csv, index=False)
    source = TableSource.open(csv)
    shards = [pd.concat(source.iter_batches(batch_rows=1000, rank=r, world_size=3)) for r in range(3)]
    # 2,800 rows in batches of 1000, 1000, 800: rank 0 takes 334 + 334 + 267 (at most a row a batch more).
    assert [len(s) for s in shards] == [935, 933, 932]
    x1 = np.concatenate([s.x1.to_numpy() for s in shards])
    assert len(np.unique(x1)) == N_FILES * ROWS == len(x1)


def _dist_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``binclf ARGS`` in a fresh process, with no torchrun variables inherited and one thread per rank."""
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("BINCLF_DEBUG", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "binclf", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300, check=False)


DIST_FLAGS = ("--target", "y", "--stream", "--model", "mlp", "--batch-size", "64", "--no-report", "--seed", "0")


@pytest.mark.slow
def test_two_processes_stream_one_bundle_close_to_one_process(dataset: Path, tmp_path: Path) -> None:
    """`--stream --nproc 2`: one bundle (world_size 2), the single-process statistics, a close test log-loss; resume."""
    two = _dist_cli("train", str(dataset), *DIST_FLAGS, "--max-epochs", "5", "--nproc", "2", "-o", "two",
                    "--checkpoint-dir", "ck", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    one = _dist_cli("train", str(dataset), *DIST_FLAGS, "--max-epochs", "5", "-o", "one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    # Rank 0 alone printed and wrote: one bundle, the lines once, the peak memory of both ranks.
    assert two.stdout.count("bundle written to two/") == 1 and two.stderr.count("epoch 1:") == 1
    assert "2 processes (gloo): each reads its share of the row groups and takes" in two.stderr
    assert two.stdout.strip().splitlines()[-1].startswith("peak memory: ") and "largest of 2" in two.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "one", "two"]
    a, b = Predictor.load(tmp_path / "two"), Predictor.load(tmp_path / "one")
    assert a.info["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert b.info["distributed"] == {"world_size": 1, "backend": None}
    assert a.info["stream"]["world_size"] == 2 and a.info["stream"]["comm_seconds_per_step"] > 0
    # Pass 1 merged over the ranks: the split, the target and the fitted preprocessing of one process
    # (bottom-k sketches keyed by row: merging shards gives the very sample one process keeps).
    assert a.info["summary"]["split_rows"] == b.info["summary"]["split_rows"]
    assert a.target.to_dict() == b.target.to_dict()
    pa_, pb_ = a.preprocessor.to_dict(), b.preprocessor.to_dict()
    assert json.dumps(pa_, sort_keys=True) == json.dumps(pb_, sort_keys=True)
    # The same test rows (hash split), global batch, seed and epochs: the runs differ only in how rows fall
    # into batches, dropout masks and the ~2% of rows each epoch leaves out for equal steps. Measured with
    # seeds 0, 1, 2: |two - one| = 0.0025, 0.0014, 0.0037 (test log-loss ~0.49, 560 test rows, bootstrap
    # 95% interval +-0.04); seeds 0-4 of one process spread over 0.035 (the seed also moves the split).
    # 0.01 leaves room for the unlucky draw. (It would not catch a broken average: Adam hardly minds a
    # 2x-scaled gradient, and unsynced ranks train well apart; train_stream checks that the ranks end with
    # the same weights, which a missing average breaks: measured, the run then fails.)
    ll_two, ll_one = a.info["metrics"]["test"]["log_loss"], b.info["metrics"]["test"]["log_loss"]
    assert abs(ll_two - ll_one) < 0.01, (ll_two, ll_one)
    df = TableSource.open(dataset).read_all()
    assert float(np.corrcoef(a.predict_proba(df), b.predict_proba(df))[0, 1]) > 0.97
    # The checkpoint (rank 0's) resumes under --nproc 2 with the same processes, and is refused with others.
    res = _dist_cli("train", str(dataset), *DIST_FLAGS, "--max-epochs", "6", "--nproc", "2", "-o", "res",
                    "--checkpoint-dir", "ck", "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming from ck after epoch 5" in res.stderr and "epoch 6:" in res.stderr and "epoch 5:" not in res.stderr
    assert Predictor.load(tmp_path / "res").info["distributed"]["world_size"] == 2
    bad = _dist_cli("train", str(dataset), *DIST_FLAGS, "--max-epochs", "7", "-o", "res1",
                    "--checkpoint-dir", "ck", "--resume", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: the checkpoint in ck was made by 2 process(es), this run has 1: resume with the same number of "
        "processes (--nproc 2)")
    assert not (tmp_path / "res1").exists()


@pytest.mark.slow
def test_two_processes_damaged_row_group_in_one_shard_is_one_line_exit_2(tmp_path: Path) -> None:
    """A damaged page that only rank 1 reads (past the schema head): every rank stops, one error line, exit 2."""
    d = tmp_path / "ds"
    d.mkdir()
    rng = np.random.default_rng(5)
    _frame(rng, 52_000).to_parquet(d / "a.parquet", row_group_size=26_000)  # the head (50,000 rows) reads these
    _frame(rng, 400).to_parquet(d / "b.parquet", row_group_size=100)
    bad = d / "b.parquet"  # units: a0 a1 b0..b3, balanced: rank 0 a0 b0 b2, rank 1 a1 b1 b3
    offset = pq.read_metadata(bad).row_group(1).column(0).data_page_offset
    data = bytearray(bad.read_bytes())
    data[offset : offset + 16] = b"\xff" * 16
    bad.write_bytes(bytes(data))
    from binclf.io.dataset import _balanced

    source = TableSource.open(d)
    shards = _balanced(source.units, 2)
    assert (source.units[3].path.name, source.units[3].row_group) == ("b.parquet", 1) and 3 in shards[1]
    r = _dist_cli("train", str(d), "--target", "y", "--stream", "--nproc", "2", "-o", "m", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    errors = [x for x in r.stderr.strip().splitlines() if x.startswith("error")]
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0]
    assert "b.parquet: cannot read row group 1" in errors[0] and "the file is damaged" in errors[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "m").exists()


def test_the_early_stopping_sample_is_drawn_by_place_the_same_in_every_pass():
    """Keys from (unit, first row) alone: a batch read again gets the same keys, a batch cut in two pieces gets
    the keys of the whole, other units and rows get others, and a share draws about that share of the rows."""
    unit = ("/data/part-00001.parquet", 3)
    whole = _position_keys((unit, 0), 1000)
    assert np.array_equal(whole, _position_keys((unit, 0), 1000))
    assert np.array_equal(whole, np.concatenate([_position_keys((unit, 0), 400), _position_keys((unit, 400), 600)]))
    other = _position_keys((("/data/part-00001.parquet", 4), 0), 1000)
    assert len(np.intersect1d(whole, other)) == 0 and len(np.unique(whole)) == 1000
    kept = _keep_share(np.concatenate([_position_keys((("f", g), 0), 5000) for g in range(20)]), 0.1)
    assert 0.09 < kept.mean() < 0.11


def test_shuffle_buffer_batches_are_the_shuffled_rows_and_stay_as_given():
    """Each drain's batches are the joined rows in the permutation's order (as shuffling the
    joined rows and slicing), the remainder waits for the next drain, and a batch given out
    keeps its values after later drains reuse the buffer's arrays."""
    from binclf.train.stream import _ShuffleBuffer

    rows = np.arange(1000, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    labels = np.arange(1000) % 2
    buf = _ShuffleBuffer(capacity=100, batch_size=16, rng=np.random.default_rng(5))
    ref_rng, pending_X, pending_y, want = np.random.default_rng(5), [], [], []
    given = []
    for lo in range(0, 1000, 37):  # parts of 37 rows: drains every 3 parts, remainders carried
        X, y = rows[lo : lo + 37], labels[lo : lo + 37]
        pending_X.append(X)
        pending_y.append(y)
        if sum(len(p) for p in pending_y) >= 100:  # the reference: join, shuffle, slice
            jx, jy = np.concatenate(pending_X), np.concatenate(pending_y)
            perm = ref_rng.permutation(len(jy))
            jx, jy = jx[perm], jy[perm]
            full = len(jy) // 16 * 16
            want += [(jx[i : i + 16], jy[i : i + 16]) for i in range(0, full, 16)]
            pending_X, pending_y = [jx[full:]], [jy[full:]]
        given += [(bx, by) for bx, by, _ in buf.add(X, y)]
    assert len(given) == len(want) > 10
    for (bx, by), (wx, wy) in zip(given, want):  # every batch, read after all the drains
        np.testing.assert_array_equal(bx.numpy(), wx)
        np.testing.assert_array_equal(by.numpy(), wy)
        assert (bx.numpy()[:, 0] % 2 == by.numpy()).all()  # rows and labels still paired
