"""Free-text columns: detection, and word + character n-gram TF-IDF features fitted on training rows.

A text column becomes two kinds of model input:

* **sparse** TF-IDF rows (word 1-2-grams and character 3-5-grams inside word
  boundaries, sublinear tf, each block L2-normalised): the input of the linear
  member, beside the other columns' features;
* a **dense** projection of those rows (truncated SVD, "latent semantic
  analysis", scaled to unit variance): the neural members' input, beside the
  other columns' features.

scikit-learn's vectorizers fit the vocabulary and idf on the training rows
only; the fitted state (terms, idf, SVD components) is stored in the bundle as
JSON and safetensors, and prediction rebuilds the same vectorizers from it with
a fixed vocabulary, so the features are identical (tested).

:class:`TextPreprocessor` wraps the table :class:`~binclf.data.preprocessing.Preprocessor`
(numbers and categories) and adds the text columns; its ``transform`` gives a
scipy CSR matrix ``(n, n_dense_ + n_sparse)``: the dense inputs first, then the
TF-IDF columns.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from binclf.data.preprocessing import Preprocessor
from binclf.data.schema import Schema
from binclf.errors import BundleError, ConfigError, DataError

__all__ = [
    "TEXT_LINEAR_PATH",
    "TEXT_MAX_CHARS",
    "TextColumn",
    "TextPreprocessor",
    "looks_like_text",
    "preprocessor_from_dict",
]

_FORMAT = "binclf.text_preprocessor/1"

# Characters of a document kept: a 10k-character review is ~1,700 words, far
# more than any n-gram model needs, and it bounds the time per row.
TEXT_MAX_CHARS = 10_000
# Vocabulary caps per block (most frequent terms): enough for ~100k documents
# of reviews (a bigger vocabulary changes test log-loss by < 0.002 on
# rotten_tomatoes), small enough for a bundle of a few MB.
MAX_WORD_TERMS = 30_000
MAX_CHAR_TERMS = 30_000
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (3, 5)
# The linear member's regularisation path on TF-IDF rows (unit-norm blocks):
# weaker than for one-hot tables; on rotten_tomatoes held-out log-loss was
# 0.552 / 0.502 / 0.479 / 0.490 at C = 0.3 / 1 / 3 / 10 (7k training rows),
# (C = 0.3 stays for noisy text beside strong columns: the generated mixed
# table of benchmarks/text.py lost 0.004 of log-loss without it), and liblinear
# fits the path ~2x faster than L-BFGS (same losses). The path is searched from
# its middle (1, 3) towards the better end, which fits 3 of the 4 Cs (same
# winner; 10k rows: 19-34% less time in the linear member).
TEXT_LINEAR_PATH = {"Cs": (0.3, 1.0, 3.0, 10.0), "solver": "liblinear", "bracket": True}
# Rows the projection is fitted on at most (its cost grows with them; 64
# directions are well estimated from a few thousand documents).
SVD_MAX_ROWS = 4000
# Dense projection for the neural members (latent semantic analysis).
SVD_COMPONENTS = 64

# Detection thresholds (see looks_like_text).
_MIN_DISTINCT_SHARE = 0.5  # mostly distinct: half the values or more differ ...
_MAX_CATEGORY_LEVELS = 100  # ... or more values than one-hot keeps (Preprocessor's max_levels)
_MIN_MEDIAN_WORDS = 3  # long enough: a phrase, not a label or a name
_MIN_WORDY_SHARE = 0.6  # made of words: most values hold 2+ runs of letters
_WORD_RE = re.compile(r"[^\W\d_]{2,}")


def looks_like_text(s: pd.Series, *, max_rows: int = 5000) -> tuple[bool, dict[str, float]]:
    """Whether a string column is free text; ``(verdict, evidence)``.

    Free text is **mostly distinct** (at least half the present values differ,
    or more than the 100 levels one-hot would keep),
    **long enough** (a median of at least 3 whitespace-separated words: shorter
    values are labels, names and codes) and **made of words** (at least 60% of
    the values hold two or more runs of two letters). Codes, hashes, e-mail
    addresses and URLs hold no spaces and fail the word count; categories fail
    the distinct share. Checked on the first ``max_rows`` present values.
    """
    present = s.dropna()
    present = present[present.astype(str).str.strip() != ""].astype(str).iloc[:max_rows]
    if present.empty:
        return False, {"distinct": 0.0, "distinct_share": 0.0, "median_words": 0.0, "wordy_share": 0.0}
    words = present.str.split().str.len()
    wordy = present.map(lambda v: len(_WORD_RE.findall(v)) >= 2)
    n_distinct = int(present.nunique())
    evidence = {
        "distinct": float(n_distinct),
        "distinct_share": float(n_distinct / len(present)),
        "median_words": float(words.median()),
        "wordy_share": float(wordy.mean()),
    }
    verdict = (
        (evidence["distinct_share"] >= _MIN_DISTINCT_SHARE or n_distinct > _MAX_CATEGORY_LEVELS)
        and evidence["median_words"] >= _MIN_MEDIAN_WORDS
        and evidence["wordy_share"] >= _MIN_WORDY_SHARE
    )
    return verdict, evidence


def text_values(s: pd.Series, *, max_chars: int = TEXT_MAX_CHARS) -> tuple[list[str], int]:
    """The column as Python strings (missing -> ``""``, others ``str()``), truncated; ``(values, n_truncated)``."""
    values = ["" if v is None or (isinstance(v, float) and v != v) or v is pd.NA else str(v) for v in s.tolist()]
    n_long = 0
    for i, v in enumerate(values):
        if len(v) > max_chars:
            values[i] = v[:max_chars]
            n_long += 1
    return values, n_long


# What the neural members read of a text column: the TF-IDF rows' SVD
# projection (default, no download) or wordllama's pretrained static word
# embeddings (optional extra `binclf[text]`; measured worse on rotten_tomatoes:
# see benchmarks/text.py). A fastText-style network (word 1-2-grams hashed into
# 2^18 buckets, EmbeddingBag mean, linear or 64-unit head, SparseAdam, early
# stopping per fold) was measured in its place beside the TF-IDF linear member
# (80/20 split, same folds): on rotten_tomatoes (10k rows) its own OOF
# log-loss beat the SVD MLP's (0.507 vs 0.596), but the blend's test log-loss
# did not move (0.4616 vs 0.4614: the linear member carries it) and it cost
# 1.5x the CPU; on the generated mixed table 0.5558-0.5575 vs 0.5556. The
# projection stays.
TEXT_ENCODERS = ("tfidf", "wordllama")
_WORDLLAMA = None


def _wordllama():
    """wordllama's model, loaded from the embeddings its wheel ships (never downloads)."""
    global _WORDLLAMA
    if _WORDLLAMA is None:
        try:
            import wordllama
            from wordllama import WordLlama
        except ImportError:
            raise ConfigError(
                "text_encoder 'wordllama' needs the optional package wordllama: pip install 'binclf[text]' "
                "(or use the default text_encoder 'tfidf')"
            ) from None
        from pathlib import Path

        _WORDLLAMA = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    return _WORDLLAMA


def _wordllama_embed(values: list[str]) -> np.ndarray:
    return np.asarray(_wordllama().embed(values, norm=True), dtype=np.float64)


def _vectorizer(kind: str, *, vocabulary: dict[str, int] | None = None, min_df: int = 1, max_features: int | None = None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    common = dict(sublinear_tf=True, lowercase=True, dtype=np.float64, vocabulary=vocabulary)
    if vocabulary is None:
        common.update(min_df=min_df, max_features=max_features)
    if kind == "word":
        return TfidfVectorizer(analyzer="word", ngram_range=WORD_NGRAMS, **common)
    return TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, **common)


class TextColumn:
    """The fitted TF-IDF (word and char blocks) and dense projection of one text column.

    Fitted attributes: ``terms_`` ``{"word": [...], "char": [...]}`` (column
    order), ``idf_`` (same keys, float64 arrays), ``components_`` ``(k, V)``
    float32 and ``scale_`` ``(k,)`` of the projection.
    """

    def __init__(self, name: str, *, max_chars: int = TEXT_MAX_CHARS, encoder: str = "tfidf") -> None:
        if encoder not in TEXT_ENCODERS:
            raise ConfigError(f"text_encoder must be one of {', '.join(TEXT_ENCODERS)}, got {encoder!r}")
        self.name = name
        self.max_chars = int(max_chars)
        self.encoder = encoder

    def fit(self, s: pd.Series, *, seed: int = 0) -> "TextColumn":
        values, _ = text_values(s, max_chars=self.max_chars)
        self.terms_, self.idf_ = {}, {}
        blocks = []
        for kind, cap in (("word", MAX_WORD_TERMS), ("char", MAX_CHAR_TERMS)):
            vec = None
            # min_df=2 drops typos and one-off names; tiny tables keep every term.
            for min_df in ((2, 1) if len(values) >= 50 else (1,)):
                try:
                    candidate = _vectorizer(kind, min_df=min_df, max_features=cap)
                    block = candidate.fit_transform(values)  # one pass: fit and the training rows' features
                    vec = candidate
                    break
                except ValueError:  # "empty vocabulary" / "max_df < min_df"
                    continue
            if vec is None:
                if kind == "word":
                    raise DataError(
                        f"text column {self.name!r} holds no words in its training rows (every value is empty or "
                        f"punctuation); drop it with --drop {self.name}"
                    )
                continue
            terms = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
            self.terms_[kind] = terms
            self.idf_[kind] = np.asarray(vec.idf_, dtype=np.float64)
            blocks.append(block)
        X = sparse.hstack(blocks, format="csr")
        self.train_features_ = X  # for TextPreprocessor.fit_transform_cached; dropped there
        self._build()
        k = int(min(SVD_COMPONENTS, X.shape[1] - 1, X.shape[0] - 1))
        if self.encoder == "wordllama":  # pretrained static embeddings instead of the projection
            self.components_ = np.zeros((0, X.shape[1]), dtype=np.float32)
            emb = _wordllama_embed(values)
            scale = emb.std(axis=0)
            self.scale_ = np.where(scale > 0, scale, 1.0).astype(np.float32)
        elif k >= 1:
            from sklearn.decomposition import TruncatedSVD

            rows = X
            if X.shape[0] > SVD_MAX_ROWS:
                rows = X[np.random.default_rng(seed).choice(X.shape[0], SVD_MAX_ROWS, replace=False)]
            svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=3, random_state=seed).fit(rows)
            self.components_ = svd.components_.astype(np.float32)
            proj = np.asarray(X @ self.components_.T)
            scale = proj.std(axis=0)
            self.scale_ = np.where(scale > 0, scale, 1.0).astype(np.float32)
        else:
            self.components_ = np.zeros((0, X.shape[1]), dtype=np.float32)
            self.scale_ = np.zeros(0, dtype=np.float32)
        return self

    def _build(self) -> None:
        """Vectorizers rebuilt from the stored terms and idf (the prediction-time transform)."""
        self._vecs = []
        for kind in ("word", "char"):
            if kind not in self.terms_:
                continue
            vec = _vectorizer(kind, vocabulary={t: i for i, t in enumerate(self.terms_[kind])})
            vec.idf_ = self.idf_[kind]
            self._vecs.append(vec)

    @property
    def n_sparse(self) -> int:
        return sum(len(t) for t in self.terms_.values())

    @property
    def n_dense(self) -> int:
        return int(self.scale_.shape[0])

    def sparse_names(self) -> list[str]:
        return [f"{self.name}~{kind}:{t}" for kind in ("word", "char") for t in self.terms_.get(kind, [])]

    def transform_sparse(self, s: pd.Series) -> sparse.csr_matrix:
        """TF-IDF rows ``(n, n_sparse)`` float64: the word block, then the char block."""
        values, _ = text_values(s, max_chars=self.max_chars)
        return sparse.hstack([v.transform(values) for v in self._vecs], format="csr")

    def project(self, X: sparse.csr_matrix, s: pd.Series | None = None) -> np.ndarray:
        """Dense inputs ``(n, n_dense)`` float32: the projection of TF-IDF rows ``X`` (or wordllama's embeddings of ``s``)."""
        if self.encoder == "wordllama":
            values, _ = text_values(s, max_chars=self.max_chars)
            return (_wordllama_embed(values) / self.scale_).astype(np.float32)
        return (np.asarray(X @ self.components_.T.astype(np.float64)) / self.scale_).astype(np.float32)

    def to_dict(self, prefix: str) -> dict[str, Any]:
        return {"name": self.name, "max_chars": self.max_chars, "encoder": self.encoder, "terms": self.terms_, "prefix": prefix}

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}idf.{k}": torch.from_numpy(v.copy()) for k, v in self.idf_.items()}
        out[f"{prefix}components"] = torch.from_numpy(self.components_.copy())
        out[f"{prefix}scale"] = torch.from_numpy(self.scale_.copy())
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "TextColumn":
        col = cls(str(d["name"]), max_chars=int(d["max_chars"]), encoder=str(d.get("encoder", "tfidf")))
        p = d["prefix"]
        col.terms_ = {k: list(v) for k, v in d["terms"].items()}
        col.idf_ = {k: tensors[f"{p}idf.{k}"].numpy().astype(np.float64) for k in col.terms_}
        for k, terms in col.terms_.items():
            if len(col.idf_[k]) != len(terms):
                raise BundleError(f"text column {col.name!r}: {len(terms)} {k} terms but {len(col.idf_[k])} idf values")
        col.components_ = tensors[f"{p}components"].numpy()
        col.scale_ = tensors[f"{p}scale"].numpy()
        col._build()
        return col


class TextPreprocessor:
    """Numbers and categories (a :class:`Preprocessor`) plus text columns.

    ``transform`` returns a CSR matrix ``(n, n_features_out_)``: the first
    ``n_dense_`` columns are the table features then each text column's dense
    projection (the neural members read these), the rest the TF-IDF blocks
    (the linear member reads all). ``notices`` collects what fitting observed
    (truncated documents).
    """

    def __init__(
        self, *, schema: Schema, numeric: str = "robust", max_chars: int = TEXT_MAX_CHARS, seed: int = 0,
        encoder: str = "tfidf",
    ) -> None:
        self.schema = schema
        self.encoder = encoder
        self.max_chars = int(max_chars)
        self.seed = int(seed)
        self.table = Preprocessor(schema=schema, numeric=numeric)
        self.notices: list[str] = []

    def fit(self, df: pd.DataFrame) -> "TextPreprocessor":
        self.notices = []
        self.table.fit(df)
        self.text_ = []
        for name in self.schema.text:
            _, n_long = text_values(df[name], max_chars=self.max_chars)
            if n_long:
                self.notices.append(
                    f"text column {name!r}: {n_long} document(s) longer than {self.max_chars} characters "
                    f"are truncated to their first {self.max_chars}"
                )
            self.text_.append(TextColumn(name, max_chars=self.max_chars, encoder=self.encoder).fit(df[name], seed=self.seed))
        self._finish()
        return self

    def _finish(self) -> None:
        dense = list(self.table.feature_names_)
        for col in self.text_:
            dense += [f"{col.name}~{'svd' if col.encoder == 'tfidf' else 'emb'}{i}" for i in range(col.n_dense)]
        self.n_dense_ = len(dense)
        self.feature_names_ = dense + [n for col in self.text_ for n in col.sparse_names()]
        self.n_features_out_ = len(self.feature_names_)

    # The table preprocessor's fitted state, as code that reads a Preprocessor expects.
    numeric_ = property(lambda self: self.table.numeric_)
    categorical_ = property(lambda self: self.table.categorical_)
    cardinalities_ = property(lambda self: self.table.cardinalities_)
    numeric = property(lambda self: self.table.numeric)

    def extra_columns(self, df: pd.DataFrame) -> list[str]:
        return self.table.extra_columns(df)

    def read_types(self) -> dict[str, str]:
        types = self.table.read_types()
        types.update({col.name: "categorical" for col in self.text_})  # read as text
        return types

    def transform(self, df: pd.DataFrame, *, row_offset: int = 0, unseen: Any = None) -> sparse.csr_matrix:
        """DataFrame (n rows) -> CSR ``(n, n_features_out_)``: dense block, then the TF-IDF blocks.

        ``unseen`` counts the categorical columns' unseen levels, as
        :meth:`binclf.data.preprocessing.Preprocessor.transform` does.
        """
        table = self.table.transform(df, row_offset=row_offset, unseen=unseen)
        dense = [sparse.csr_matrix(table.astype(np.float64))]
        tfidf = []
        for col in self.text_:
            X = col.transform_sparse(df[col.name])
            dense.append(sparse.csr_matrix(col.project(X, df[col.name]).astype(np.float64)))
            tfidf.append(X)
        return sparse.hstack(dense + tfidf, format="csr")

    def transform_dense(self, df: pd.DataFrame, *, row_offset: int = 0) -> np.ndarray:
        """The neural members' inputs ``(n, n_dense_)`` float32."""
        return dense_part(self.transform(df, row_offset=row_offset), self.n_dense_)

    def fit_transform(self, df: pd.DataFrame) -> sparse.csr_matrix:
        return self.fit(df).transform(df)

    def fit_transform_cached(self, df: pd.DataFrame) -> sparse.csr_matrix:
        """``fit(df).transform(df)`` without vectorizing the training rows twice.

        Equal to rounding (sklearn's ``fit_transform`` sums in another order:
        differences of ~1e-16), tested.
        """
        self.fit(df)
        dense = [sparse.csr_matrix(self.table.transform(df).astype(np.float64))]
        tfidf = []
        for col in self.text_:
            X = col.__dict__.pop("train_features_")
            dense.append(sparse.csr_matrix(col.project(X, df[col.name]).astype(np.float64)))
            tfidf.append(X)
        return sparse.hstack(dense + tfidf, format="csr")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "table": self.table.to_dict(),
            "max_chars": self.max_chars,
            "seed": self.seed,
            "encoder": self.encoder,
            "text": [col.to_dict(f"text{i}.") for i, col in enumerate(self.text_)],
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for i, col in enumerate(self.text_):
            out.update(col.tensors(f"text{i}."))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "TextPreprocessor":
        table = Preprocessor.from_dict(d["table"])
        p = cls(
            schema=table.schema, numeric=table.numeric, max_chars=d["max_chars"], seed=d["seed"],
            encoder=d.get("encoder", "tfidf"),
        )
        p.table = table
        try:
            p.text_ = [TextColumn.from_dict(c, tensors) for c in d["text"]]
        except KeyError as exc:
            raise BundleError(f"text preprocessing state is damaged: missing {exc}; re-train the model") from None
        p._finish()
        return p

    def check_exportable(self) -> None:
        """ONNX export meets a text bundle: say in one line that it cannot be done yet."""
        names = ", ".join(repr(c.name) for c in self.text_)
        raise BundleError(
            f"this bundle has free-text column(s) {names}, which cannot be exported to ONNX yet; "
            "predict with `binclf predict` or binclf.Predictor.load"
        )

    def __repr__(self) -> str:
        return f"TextPreprocessor(text={[c.name for c in getattr(self, 'text_', [])]}, table={self.table!r})"


def dense_part(X: Any, n_dense: int) -> np.ndarray:
    """The first ``n_dense`` columns of model inputs, dense float32 (``X`` itself when already dense)."""
    if not sparse.issparse(X):
        return np.ascontiguousarray(X, dtype=np.float32)
    return np.ascontiguousarray(X[:, :n_dense].toarray(), dtype=np.float32)


def preprocessor_from_dict(d: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Preprocessor | TextPreprocessor:
    """The preprocessor a bundle describes: with text columns or without."""
    if isinstance(d, dict) and d.get("format") == _FORMAT:
        return TextPreprocessor.from_dict(d, tensors)
    return Preprocessor.from_dict(d)


def top_ngrams(weights: np.ndarray, names: list[str], *, k: int = 15) -> dict[str, list[tuple[str, float]]]:
    """The TF-IDF features with the largest positive and negative linear weights.

    ``weights`` ``(n_features,)`` over ``names``; only text features (names with ``~``) count.
    """
    idx = np.array([i for i, n in enumerate(names) if "~word:" in n or "~char:" in n], dtype=np.int64)
    if idx.size == 0:
        return {"positive": [], "negative": []}
    w = weights[idx]
    order = np.argsort(w)
    pos = [(names[idx[i]], float(w[i])) for i in order[::-1][:k] if w[i] > 0]
    neg = [(names[idx[i]], float(w[i])) for i in order[:k] if w[i] < 0]
    return {"positive": pos, "negative": neg}
