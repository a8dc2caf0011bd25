"""Free-text columns: reading, detection, TF-IDF features, train -> bundle -> predict, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from binclf import Predictor
from binclf.cli import main
from binclf.data.schema import infer_schema
from binclf.data.text import TextColumn, TextPreprocessor, _vectorizer, looks_like_text, text_values
from binclf.errors import DataError
from binclf.io.tables import iter_batches, read_table
from binclf.train.pipeline import TrainOptions, train_table

_GOOD = "great wonderful superb moving delightful".split()
_BAD = "dull boring awful tedious clumsy".split()
_FILL = "the film plot actor story scene director camera music ending".split()


def _reviews(n: int = 120, *, seed: int = 0, extra: bool = False) -> pd.DataFrame:
    """Short generated reviews whose sentiment words carry the label (and a number, with ``extra``)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    texts = []
    for yi in y:
        words = list(rng.choice(_FILL, 6)) + list(rng.choice(_GOOD if yi else _BAD, 2)) + list(rng.choice(_GOOD + _BAD, 1))
        rng.shuffle(words)
        texts.append(" ".join(words))
    df = pd.DataFrame({"review": texts, "label": np.where(y == 1, "yes", "no")})
    if extra:
        df["age"] = rng.normal(40, 10, n) + 8 * y
    return df


def test_detection_text_identifier_categorical():
    """Reviews are text; codes and e-mails are identifiers; repeated sentences are categorical (with a notice)."""
    df = _reviews(100)
    df["code"] = [f"X{i:05d}-{i * 7919 % 10007:x}" for i in range(100)]
    df["email"] = [f"user{i}@example.com" for i in range(100)]
    df["canned"] = np.where(np.arange(100) % 2, "the parcel came on time", "the parcel came late again")
    schema, notices = infer_schema(df, target="label")
    roles = {c.name: c.role for c in schema.columns}
    assert roles == {"review": "text", "canned": "categorical"}
    assert dict(schema.dropped) == {"code": "identifier", "email": "identifier"}
    assert any(n.startswith("column 'review' is free text (median 9 words)") for n in notices)
    assert any("'canned' holds sentences but only 2 distinct values: it is treated as categorical" in n for n in notices)


def test_overrides_text_and_categorical():
    """--text makes a column text, --categorical keeps it categorical."""
    df = _reviews(60)
    schema, _ = infer_schema(df, target="label", categorical=["review"])
    assert schema.columns[0].role == "categorical"
    df["short"] = [f"w{i % 7}" for i in range(60)]
    schema, _ = infer_schema(df, target="label", text=["short"])
    assert {c.name: c.role for c in schema.columns}["short"] == "text"
    with pytest.raises(DataError, match="given as both --text and --categorical"):
        infer_schema(df, target="label", text=["review"], categorical=["review"])


def test_looks_like_text_evidence():
    """The evidence the verdict rests on: distinct share, median words, share of wordy values."""
    ok, ev = looks_like_text(pd.Series(["a b c d", "e f g h"] * 3 + ["lovely long review of a film"]))
    assert not ok and ev["median_words"] == 4.0 and ev["wordy_share"] < 0.6  # single letters are not words


def test_transform_equals_sklearn_fitted_vectorizer():
    """The rebuilt vectorizers (stored terms + idf) give sklearn's fitted transform exactly."""
    df = _reviews(80)
    col = TextColumn("review").fit(df["review"])
    new = pd.Series(["a superb film", None, "dull, dull ending!", "unseen words only"])
    ours = col.transform_sparse(new).toarray()
    values, _ = text_values(new)
    ref = []
    for kind in ("word", "char"):
        vec = _vectorizer(kind, min_df=2 if len(df) >= 50 else 1, max_features=30_000).fit(df["review"].tolist())
        ref.append(vec.transform(values).toarray())
    np.testing.assert_array_equal(ours, np.hstack(ref))


def test_train_bundle_predict_equal_python_api(tmp_path):
    """binclf train -> bundle -> binclf predict gives the probabilities the Python API gives."""
    df = _reviews(160, extra=True)
    data = tmp_path / "reviews.csv"
    df.to_csv(data, index=False)
    out = tmp_path / "model"
    r = CliRunner().invoke(main, ["train", str(data), "--target", "label", "--positive", "yes", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "column 'review' is free text" in r.output
    pred = tmp_path / "pred.csv"
    r = CliRunner().invoke(main, ["predict", str(out), str(data), "-o", str(pred)])
    assert r.exit_code == 0, r.output
    p = Predictor.load(out)
    assert isinstance(p.preprocessor, TextPreprocessor)
    np.testing.assert_allclose(pd.read_csv(pred)["probability"].to_numpy(), p.predict_proba(df), rtol=0, atol=1e-12)
    assert p.info["metrics"]["test"]["roc_auc"] > 0.8


def test_text_with_numbers_beside(tmp_path):
    """A text column beside a numeric one: both reach the model; the bundle reloads identically."""
    df = _reviews(200, extra=True)
    res = train_table(df, TrainOptions(target="label", positive="yes", n_boot=20, max_epochs=5))
    roles = {c.name: c.role for c in res.predictor.schema.columns}
    assert roles == {"review": "text", "age": "numeric"}
    res.predictor.save(tmp_path / "m")
    again = Predictor.load(tmp_path / "m")
    np.testing.assert_array_equal(again.predict_proba(df), res.predictor.predict_proba(df))


def test_csv_with_newlines_quotes_commas_written_by_pandas(tmp_path):
    """Quoted values holding line breaks, quotes and commas read back as written, in every reader."""
    n = 3000
    texts = [f'line one {i}, "quoted"\nline two, {i}' if i % 3 == 0 else f"plain {i}" for i in range(n)]
    df = pd.DataFrame({"x": np.arange(n, dtype=float), "text": texts, "y": np.arange(n) % 2})
    for name in ("t.csv", "t.csv.gz"):
        path = tmp_path / name
        df.to_csv(path, index=False)
        assert read_table(path)["text"].tolist() == texts
        got = pd.concat(iter_batches(path, batch_rows=700))
        assert got["text"].tolist() == texts and len(got) == n


def test_csv_newlines_across_small_blocks(tmp_path):
    """The block reader cuts blocks outside quoted line breaks (tiny blocks force many cuts)."""
    from binclf.io.tables import _iter_csv

    texts = [f'a "b",\nc {i}\r\nd' for i in range(500)]
    df = pd.DataFrame({"text": texts, "y": np.arange(500) % 2})
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    got = pd.concat(_iter_csv(path, batch_rows=64, sep=None, columns=None, column_types=None, encoding=None,
                              block_bytes=256))
    assert got["text"].tolist() == texts


def test_all_empty_text_column():
    """A text column without any word: forced as text, the error names it and the fix."""
    df = _reviews(60)
    df["empty"] = ["  ...  "] * 30 + [" - "] * 30
    with pytest.raises(DataError, match="text column 'empty' holds no words in its training rows"):
        TextPreprocessor(schema=infer_schema(df, target="label", text=["empty"])[0]).fit(df)


def test_mixed_types_in_text_column():
    """Numbers, None and strings in one object column are read as text (numbers become tokens)."""
    df = _reviews(80)
    values = df["review"].astype(object)
    values.iloc[::10] = 42
    values.iloc[1::10] = None
    df["review"] = values
    schema, _ = infer_schema(df, target="label")
    assert schema.text == ["review"]
    X = TextPreprocessor(schema=schema).fit_transform(df)
    assert X.shape[0] == 80


def test_long_documents_truncated_with_notice():
    """Documents over the stated length are cut there, with a notice."""
    df = _reviews(60)
    df.loc[0, "review"] = "superb " * 5000
    schema, _ = infer_schema(df, target="label")
    prep = TextPreprocessor(schema=schema, max_chars=1000).fit(df)
    assert prep.notices == [
        "text column 'review': 1 document(s) longer than 1000 characters are truncated to their first 1000"
    ]


def test_non_utf8_bytes_error_names_the_row(tmp_path):
    """A byte that is not UTF-8 gives an error naming its row and the --encoding fix."""
    path = tmp_path / "bad.csv"
    body = "review,label\n" + "".join(f"a fine film number {i},yes\n" for i in range(5))
    path.write_bytes(body.encode() + b"caf\xe9 au lait is good,no\n")
    with pytest.raises(DataError, match=r"not valid UTF-8 .*row 7\).*--encoding latin-1"):
        read_table(path)


def test_report_lists_ngrams_and_export_refuses(tmp_path):
    """The report's text section names the n-grams pushing each way; export says text bundles cannot go to ONNX."""
    from binclf.errors import BundleError
    from binclf.report.html import render_training_report

    res = train_table(_reviews(200), TrainOptions(target="label", positive="yes", n_boot=20, max_epochs=5))
    html = render_training_report(res)
    assert "n-grams that push the prediction" in html and "towards yes" in html
    pos = html[html.index("towards yes"):html.index("towards no")]
    assert any(w in pos for w in _GOOD)
    with pytest.raises(BundleError, match="free-text column\\(s\\) 'review', which cannot be exported to ONNX yet"):
        res.predictor.preprocessor.check_exportable()
    # binclf export says so in one line, exit 2, and writes nothing
    from click.testing import CliRunner

    from binclf.cli import main

    res.predictor.save(tmp_path / "m")
    r = CliRunner().invoke(main, ["export", str(tmp_path / "m"), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2 and "cannot be exported to ONNX yet" in r.output, r.output
    assert not (tmp_path / "m.onnx").exists()
    # binclf serve refuses it before listening (its records path reads numbers and categories only)
    pytest.importorskip("fastapi")
    r = CliRunner().invoke(main, ["serve", str(tmp_path / "m"), "--port", "0"])
    assert r.exit_code == 2 and "free-text columns, which `binclf serve` cannot serve yet" in r.output, r.output


def test_wordllama_encoder_offline():
    """--text-encoder wordllama: embeddings from the installed wheel, no download; same predictions after reload."""
    pytest.importorskip("wordllama")
    df = _reviews(80)
    schema, _ = infer_schema(df, target="label")
    prep = TextPreprocessor(schema=schema, encoder="wordllama").fit(df)
    X = prep.transform(df)
    assert prep.n_dense_ == 256 and X.shape[1] == prep.n_features_out_
    again = type(prep).from_dict(prep.to_dict(), prep.tensors())
    assert abs(again.transform(df) - X).max() == 0


def test_fit_transform_cached_equals_transform():
    """The training rows' features reused from fitting equal a fresh transform of those rows (to rounding)."""
    df = _reviews(120, extra=True)
    schema, _ = infer_schema(df, target="label")
    prep = TextPreprocessor(schema=schema)
    cached = prep.fit_transform_cached(df)
    assert abs(cached - prep.transform(df)).max() < 1e-12  # sklearn's fit_transform sums in another order


def test_bracketed_linear_path_finds_the_full_paths_winner():
    """The text path's search from its middle picks the same C, members and OOF logits as fitting every C."""
    from binclf.data.text import TEXT_LINEAR_PATH
    from binclf.train.crossfit import fit_logistic_path, fold_indices

    df = _reviews(300, seed=3)
    X = TextPreprocessor(schema=infer_schema(df, target="label")[0]).fit_transform(df)
    y = (df["label"] == "yes").to_numpy().astype(float)
    folds = fold_indices(y, k=3, seed=0)
    full = fit_logistic_path(X, y, folds, **{**TEXT_LINEAR_PATH, "bracket": False})
    fast = fit_logistic_path(X, y, folds, **TEXT_LINEAR_PATH)
    assert fast[0] == full[0]
    np.testing.assert_allclose(fast[2], full[2])
    assert len(fast[3]) == len(full[3]) - 1
    assert all(fast[3][c] == full[3][c] for c in fast[3])


def test_train_fits_text_preprocessor_once(monkeypatch):
    """train_table vectorizes the training rows once (fit + transform in one pass)."""
    calls = []
    original = TextColumn.fit
    monkeypatch.setattr(TextColumn, "fit", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    train_table(_reviews(150), TrainOptions(target="label", positive="yes", n_boot=10, max_epochs=3))
    assert len(calls) == 1
