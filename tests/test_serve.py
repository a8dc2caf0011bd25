"""``binclf serve``: the real server in a subprocess on a free loopback port, driven over HTTP.

Checks each endpoint, each error status (bad input is never a 5xx, and error
bodies hold no traceback or file path), equality with ``binclf predict`` to 1e-6,
concurrent clients, and the generated OpenAPI schema with schemathesis.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from binclf import Predictor, read_table  # noqa: E402
from binclf.data.preprocessing import Preprocessor  # noqa: E402
from binclf.data.schema import infer_schema  # noqa: E402
from binclf.serve import parse_size  # noqa: E402
from binclf.serve.rows import InputError, RowDecoder  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
DATA = Path(__file__).parent / "data"
PARTICIPATION = FIXTURES / "bundle-v1-participation-logistic"  # numbers + categories, isotonic, abstain band
BIOPSY = FIXTURES / "bundle-v1-biopsy-auto"  # the default 10-member ensemble; V6 had missing values
MAX_BODY = 200_000
GOOD = {"lnnlinc": 10.7, "age": 3.0, "educ": 8, "nyc": 1, "noc": 1, "foreign": "no"}


# --------------------------------------------------------------------------- #
# the server
# --------------------------------------------------------------------------- #

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, bundle: Path, log: Path, *extra: str) -> None:
        self.log = log
        for _ in range(3):  # a port found free can be taken before the server binds it: try another
            self.port = _free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "binclf", "serve", str(bundle), "--port", str(self.port),
                 "--max-body", str(MAX_BODY), *extra],
                stdout=subprocess.DEVNULL, stderr=open(log, "wb"), start_new_session=True,
            )
            if self._wait():
                self.client = httpx.Client(base_url=self.url, timeout=30)
                return
            self.stop()
        raise RuntimeError(f"the server did not start:\n{log.read_text()}")

    def _wait(self) -> bool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the server and its workers
                self.proc.wait()


@pytest.fixture(scope="module")
def part(tmp_path_factory):
    server = Server(PARTICIPATION, tmp_path_factory.mktemp("serve") / "participation.log")
    yield server
    server.client.close()
    server.stop()


@pytest.fixture(scope="module")
def biopsy(tmp_path_factory):
    server = Server(BIOPSY, tmp_path_factory.mktemp("serve") / "biopsy.log")
    yield server
    server.client.close()
    server.stop()


def _records(df: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]


def _post_json(server: Server, path: str, payload, **kw) -> httpx.Response:
    return server.client.post(path, content=json.dumps(payload), headers={"content-type": "application/json"}, **kw)


def _clean(body: str) -> None:
    """Error bodies hold no traceback and no file path."""
    for leak in ("Traceback", 'File "', ".py", "/work", "/tmp", "site-packages", str(FIXTURES)):
        assert leak not in body, body


# --------------------------------------------------------------------------- #
# endpoints
# --------------------------------------------------------------------------- #

def test_health_metadata_openapi(part):
    assert part.client.get("/health").json() == {"status": "ok"}
    meta = part.client.get("/metadata").json()
    assert [c["name"] for c in meta["columns"]] == ["lnnlinc", "age", "educ", "nyc", "noc", "foreign"]
    foreign = meta["columns"][5]
    assert foreign["role"] == "categorical" and foreign["categories"] == ["no", "yes"] and foreign["required"]
    assert meta["target"] == {"column": "lfp", "positive": "yes", "negative": "no"}
    assert meta["objective"] == "cost:1,3" and meta["calibration"] == "isotonic"
    assert meta["abstain_band"] == [pytest.approx(0.3181818), 0.7]
    assert len(meta["weights_sha256"]) == 64 and "test" in meta["metrics"]
    assert meta["trained_with"]["binclf"] and meta["serving_with"]["fastapi"]
    schema = part.client.get("/openapi.json").json()
    record = schema["components"]["schemas"]["Record"]
    # one typed, nullable field per column
    assert record["properties"]["age"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    assert record["properties"]["foreign"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert record["properties"]["nyc"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert set(record["required"]) == set(GOOD)


def test_predict_equals_binclf_predict(part, tmp_path):
    """JSON records, {"rows"}, CSV and every MLflow format give `binclf predict`'s probabilities to 1e-6."""
    out = tmp_path / "p.csv"
    r = subprocess.run([sys.executable, "-m", "binclf", "predict", PARTICIPATION, DATA / "participation.csv", "-o", out],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    want = pd.read_csv(out)
    df = read_table(DATA / "participation.csv")
    records = _records(df.drop(columns=["lfp"]))
    cols = list(records[0])
    answers = {
        "list": _post_json(part, "/predict", records),
        "rows": _post_json(part, "/predict", {"rows": records}),
        "csv": part.client.post("/predict", content=(DATA / "participation.csv").read_bytes(),
                                headers={"content-type": "text/csv"}),
        "records": _post_json(part, "/invocations", {"dataframe_records": records}),
        "split": _post_json(part, "/invocations",
                            {"dataframe_split": {"columns": cols, "data": [list(r.values()) for r in records]}}),
        "instances": _post_json(part, "/invocations", {"instances": records}),
        "inputs": _post_json(part, "/invocations", {"inputs": {c: [r[c] for r in records] for c in cols}}),
    }
    for name, resp in answers.items():
        assert resp.status_code == 200, (name, resp.text)
        preds = resp.json()["predictions"]
        assert len(preds) == len(want), name
        np.testing.assert_allclose([p["probability"] for p in preds], want["probability"], rtol=0, atol=1e-6,
                                   err_msg=name)
        assert [p["prediction"] for p in preds] == want["prediction"].tolist(), name
        assert [p["abstain"] for p in preds] == (want["prediction"] == "abstain").tolist(), name
    body = answers["list"].json()
    assert body["threshold"] == pytest.approx(0.3181818181818182) and body["abstain_band"][1] == 0.7


def test_threshold_override(part):
    records = [GOOD, {**GOOD, "lnnlinc": 9.0, "foreign": "yes"}]
    base = _post_json(part, "/predict", records).json()
    for t in (0.0, 0.5, 1.0):
        got = _post_json(part, "/predict", records, params={"threshold": t}).json()
        assert got["threshold"] == t and "abstain_band" not in got
        for b, g in zip(base["predictions"], got["predictions"]):
            assert g["probability"] == b["probability"] and "abstain" not in g
            assert g["prediction"] == ("yes" if b["probability"] >= t else "no")
        mlflow = _post_json(part, "/invocations", {"instances": records, "params": {"threshold": t}}).json()
        assert mlflow["predictions"] == got["predictions"]


def test_ensemble_missing_values_and_unseen_categories(biopsy, part):
    """The 10-member bundle equals `binclf predict`; null, absent optional fields, "NA" and unseen levels are missing/unknown as in predict."""
    want = pd.read_csv(FIXTURES / "bundle-v1-biopsy-auto.expected.csv")
    df = read_table(DATA / "biopsy.csv").drop(columns=["class"])
    got = _post_json(biopsy, "/predict", _records(df)).json()["predictions"]
    np.testing.assert_allclose([p["probability"] for p in got], want["probability"], rtol=0, atol=1e-6)
    assert [p["prediction"] for p in got] == want["prediction"].tolist()

    row = _records(df.head(1))[0]
    pred = Predictor.load(BIOPSY)
    nan_row = pd.DataFrame([{**row, "V6": np.nan}])
    expected = pred.predict_proba(nan_row)[0]
    absent = {k: v for k, v in row.items() if k != "V6"}  # V6 had missing values in training: optional
    for variant in ({**row, "V6": None}, absent, {**row, "V6": "NA"}, {**row, "V6": ""}):
        p = _post_json(biopsy, "/predict", [variant]).json()["predictions"][0]["probability"]
        assert p == pytest.approx(expected, abs=1e-6), variant

    ppred = Predictor.load(PARTICIPATION)
    unseen = pd.DataFrame([{**GOOD, "foreign": "martian", "nyc": "7"}])
    p = _post_json(part, "/predict", [{**GOOD, "foreign": "martian", "nyc": 7}]).json()["predictions"][0]
    assert p["probability"] == pytest.approx(ppred.predict_proba(unseen)[0], abs=1e-6)
    # numbers as text and codes as numbers mean what they mean in a CSV
    same = _post_json(part, "/predict", [{**GOOD, "age": "3.0", "nyc": "1.0"}, GOOD]).json()["predictions"]
    assert same[0]["probability"] == same[1]["probability"]


# --------------------------------------------------------------------------- #
# errors: never a 5xx
# --------------------------------------------------------------------------- #

J = "application/json"
INVALID = {
    "missing column": (J, [{k: v for k, v in GOOD.items() if k != "age"}], 0, "age"),
    "text in a numeric field": (J, [GOOD, {**GOOD, "age": "old"}], 1, "age"),
    "boolean in a numeric field": (J, [{**GOOD, "educ": True}], 0, "educ"),
    "nested object": (J, [{**GOOD, "foreign": {"a": 1}}], 0, "foreign"),
    "nested list": (J, [{**GOOD, "noc": [1, 2]}], 0, "noc"),
    "infinity (1e999)": (J, b'[{"lnnlinc": 1e999, "age": 3, "educ": 8, "nyc": 1, "noc": 1, "foreign": "no"}]', 0, "lnnlinc"),
    "Infinity literal": (J, b'[{"lnnlinc": Infinity, "age": 3, "educ": 8, "nyc": 1, "noc": 1, "foreign": "no"}]', None, None),
    "huge integer": (J, b'[{"lnnlinc": 1' + b"0" * 400 + b', "age": 3, "educ": 8, "nyc": 1, "noc": 1, "foreign": "no"}]', 0, "lnnlinc"),
    "inf as text": (J, [{**GOOD, "age": "inf"}], 0, "age"),
    "malformed JSON": (J, b'[{"age": 3,', None, None),
    "empty body": (J, b"", None, None),
    "empty list": (J, [], None, None),
    "not a record": (J, [GOOD, 5], 1, None),
    "a scalar": (J, 5, None, None),
    "rows not a list": (J, {"rows": {"a": 1}}, None, None),
    "unknown top key": (J, {"records": [GOOD]}, None, None),
    "deep nesting": (J, b"[" * 50_000, None, None),
    "not UTF-8": (J, b'[{"foreign": "\xff"}]', None, None),
    "CSV missing column": ("text/csv", b"lnnlinc,age\n1,2\n", None, "educ"),
    "CSV text in number": ("text/csv", b"lnnlinc,age,educ,nyc,noc,foreign\n1,x,8,1,1,no\n", 0, "age"),
    "CSV ragged": ("text/csv", b"lnnlinc,age,educ,nyc,noc,foreign\n1,2,8,1,1,no,9,9\n", None, None),
    "CSV header only": ("text/csv", b"lnnlinc,age,educ,nyc,noc,foreign\n", None, None),
    "CSV empty": ("text/csv", b"", None, None),
}
INVALID_MLFLOW = {
    "no key": {"data": [GOOD]},
    "two keys": {"instances": [GOOD], "dataframe_records": [GOOD]},
    "split ragged": {"dataframe_split": {"columns": list(GOOD), "data": [[1, 2]]}},
    "split not lists": {"dataframe_split": {"columns": list(GOOD), "data": [GOOD]}},
    "split missing column": {"dataframe_split": {"columns": ["age"], "data": [[1]]}},
    "split duplicate column": {"dataframe_split": {"columns": ["age", "age"], "data": [[1, 2]]}},
    "inputs ragged": {"inputs": {"age": [1, 2], "educ": [1]}},
    "bad param": {"instances": [GOOD], "params": {"threshold": 2}},
    "unknown param": {"instances": [GOOD], "params": {"alpha": 1}},
    "records empty": {"dataframe_records": []},
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_input_is_422_naming_row_and_column(part, case):
    ctype, payload, row, column = INVALID[case]
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    r = part.client.post("/predict", content=content, headers={"content-type": ctype})
    assert r.status_code == 422, r.text
    body = r.json()
    _clean(r.text)
    assert body["detail"] and body["problems"]
    if column is not None:
        assert any(p["column"] == column and p["row"] == row for p in body["problems"]), body
        assert f"column {column!r}" in body["detail"]


@pytest.mark.parametrize("case", sorted(INVALID_MLFLOW))
def test_invalid_mlflow_input_is_422(part, case):
    r = _post_json(part, "/invocations", INVALID_MLFLOW[case])
    assert r.status_code == 422, r.text
    _clean(r.text)


def test_every_problem_is_listed(part):
    rows = [{**GOOD, "age": "x"}, {k: v for k, v in GOOD.items() if k != "educ"}, {**GOOD, "nyc": [1]}]
    problems = _post_json(part, "/predict", rows).json()["problems"]
    assert {(p["row"], p["column"]) for p in problems} == {(0, "age"), (1, "educ"), (2, "nyc")}


def test_threshold_query_errors(part):
    for bad in ("abc", "2", "-0.1", "nan", "inf"):
        r = _post_json(part, "/predict", [GOOD], params={"threshold": bad})
        assert r.status_code == 422, (bad, r.text)
        assert "threshold" in r.json()["detail"]


def test_body_limits_and_content_types(part):
    big = json.dumps([GOOD] * 5000).encode()
    assert len(big) > MAX_BODY
    r = part.client.post("/predict", content=big, headers={"content-type": J})
    assert r.status_code == 413 and "200,000" in r.json()["detail"]

    def chunks():  # no Content-Length: the streamed bytes are counted
        for i in range(0, len(big), 16_384):
            yield big[i : i + 16_384]

    r = part.client.post("/predict", content=chunks(), headers={"content-type": J})
    assert r.status_code == 413, r.text
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/xml", "text/csv; charset=latin-1"):
        r = part.client.post("/predict", content=b"[]", headers={"content-type": ctype})
        assert r.status_code == 415, (ctype, r.text)
    r = part.client.post("/invocations", content=b"[]", headers={"content-type": "image/png"})
    assert r.status_code == 415
    r = httpx.post(part.url + "/predict", content=b"x")  # httpx sends no Content-Type here
    assert r.status_code == 415
    assert part.client.get("/predict").status_code == 405
    assert part.client.get("/nowhere").status_code == 404
    # a body just under the limit is fine
    ok = json.dumps([GOOD] * 1000).encode()
    assert len(ok) < MAX_BODY
    assert part.client.post("/predict", content=ok, headers={"content-type": J}).status_code == 200


def test_metrics_and_access_log(part):
    _post_json(part, "/predict", [GOOD, GOOD])
    _post_json(part, "/predict", [{**GOOD, "age": "x"}])
    text = part.client.get("/metrics").text
    assert 'binclf_requests_total{method="POST",path="/predict",status="200"}' in text
    assert 'binclf_errors_total{path="/predict",status="422"}' in text
    assert 'binclf_rows_total{path="/predict"}' in text
    assert 'binclf_request_duration_seconds_bucket{le="0.005",path="/predict"}' in text
    part.client.get("/no/such/path")
    assert 'path="other"' in part.client.get("/metrics").text  # unknown paths do not grow the label set
    time.sleep(0.2)
    log = part.log.read_text()
    assert "POST /predict 200 rows=2 " in log and "POST /predict 422 rows=0 " in log
    assert "Traceback" not in log


def test_concurrent_clients(part):
    pred = Predictor.load(PARTICIPATION)
    df = read_table(DATA / "participation.csv").drop(columns=["lfp"])
    records = _records(df)
    # one row per request, so `binclf predict` on one row each: float32 logits may differ in the
    # last bits between batch sizes, and a steep isotonic step can amplify that past 1e-6
    used = sorted({(k * 37 + j * 11) % len(records) for k in range(8) for j in range(20)})
    want = dict(zip(used, (pred.predict_proba(df.iloc[[i]])[0] for i in used)))

    def client(k: int) -> list[tuple[int, float, int]]:
        out = []
        with httpx.Client(base_url=part.url, timeout=30) as c:
            for j in range(20):
                i = (k * 37 + j * 11) % len(records)
                bad = j % 5 == 4
                row = {**records[i], "age": "?!"} if bad else records[i]
                r = c.post("/predict", content=json.dumps([row]), headers={"content-type": J})
                out.append((i, r.json()["predictions"][0]["probability"] if r.status_code == 200 else -1.0,
                            r.status_code))
        return out

    with ThreadPoolExecutor(8) as pool:
        results = [x for chunk in pool.map(client, range(8)) for x in chunk]
    assert len(results) == 160
    for i, p, status in results:
        assert status in (200, 422)
        if status == 200:
            assert abs(p - want[i]) < 1e-6
    assert sum(s == 422 for _, _, s in results) == 32


# --------------------------------------------------------------------------- #
# schemathesis: the generated OpenAPI schema against the live server
# --------------------------------------------------------------------------- #

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_openapi_no_server_errors(part, mode):
    """Generated requests (valid and invalid) never get a 5xx, and answers match the documented schema.

    Driven through schemathesis' Python API with hypothesis (its pytest plugin
    breaks with some pytest releases), a bounded number of examples over every
    operation. Left out on purpose: ``positive_data_acceptance`` (a schema cannot
    say that a ``dataframe_split`` row must have one value per column, so some
    schema-valid bodies are rightly 422) and ``negative_data_rejection`` (the server
    accepts the spellings ``binclf predict`` accepts, such as numbers written as text).
    """
    from hypothesis import given
    from schemathesis.checks import negative_data_rejection, positive_data_acceptance

    api = schemathesis.openapi.from_url(part.url + "/openapi.json")
    seen: set[str] = set()

    @given(case=api.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case):
        seen.add(f"{case.method} {case.path}")
        case.call_and_validate(excluded_checks=[positive_data_acceptance, negative_data_rejection])

    check()
    assert {"POST /predict", "POST /invocations"} <= seen, seen


# --------------------------------------------------------------------------- #
# in-process units: the records path equals the DataFrame path
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("bundle, table, target", [
    (PARTICIPATION, "participation.csv", "lfp"),
    (BIOPSY, "biopsy.csv", "class"),
    (FIXTURES / "bundle-v1-titanic-mlp", "titanic.csv", "survived"),
])
def test_records_path_equals_transform(bundle, table, target):
    pred = Predictor.load(bundle)
    df = read_table(DATA / table).drop(columns=[target])
    cols = RowDecoder(pred.preprocessor).records(_records(df))
    X = pred.preprocessor.transform_arrays(cols.numbers, cols.codes)
    np.testing.assert_array_equal(X, pred.transform(df))


def test_records_path_missing_spellings():
    """A numeric column whose training data spelled missing as "?" reads "?" as missing here too."""
    df = pd.DataFrame({"x": ["1", "2", "?", "4", "5", "6"] * 5, "c": ["a", "b", "a", None, "a", "b"] * 5,
                       "y": [0, 1] * 15})
    schema, _ = infer_schema(df, target="y", numeric=["x"])
    pre = Preprocessor(schema=schema, min_level_count=1).fit(df)
    dec = RowDecoder(pre)
    assert dec.optional == {"x", "c"}
    rows = [{"x": "?", "c": "a"}, {"x": " 3 ", "c": None}, {"c": "zzz"}, {"x": 2.5, "c": "NA"}]
    cols = dec.records(rows)
    frame = pd.DataFrame({"x": ["?", " 3 ", None, "2.5"], "c": ["a", None, "zzz", None]})
    np.testing.assert_array_equal(pre.transform_arrays(cols.numbers, cols.codes), pre.transform(frame))
    with pytest.raises(InputError, match=r"row 0, column 'x': should hold a number but holds \"abc\""):
        dec.records([{"x": "abc", "c": "a"}])


def test_unexpected_error_is_a_generic_500():
    """The last resort: an exception inside the app is logged, and answered 500 without its text."""
    from fastapi.testclient import TestClient

    from binclf.serve import create_app

    pred = Predictor.load(PARTICIPATION)

    def broken(X):
        raise RuntimeError("boom in /secret/place.py")

    pred.proba_from_inputs = broken
    with TestClient(create_app(pred)) as client:
        r = client.post("/predict", content=json.dumps([GOOD]), headers={"content-type": J})
        assert r.status_code == 500
        assert r.json()["detail"].startswith("internal server error") and "boom" not in r.text
        _clean(r.text)
        assert client.get("/health").status_code == 200  # the server goes on
        assert 'binclf_errors_total{path="/predict",status="500"} 1.0' in client.get("/metrics").text


def test_json_module_fallback(monkeypatch):
    """Without orjson the answers are the same JSON, and the json module's messages stay precise."""
    from binclf.serve import app as serve_app

    service = serve_app.Service(Predictor.load(PARTICIPATION))
    body = json.dumps([GOOD, {**GOOD, "foreign": "yes", "age": None}]).encode()
    fast = json.loads(service.predict_body("json", body, None)[0])
    monkeypatch.setattr(serve_app, "orjson", None)
    assert json.loads(service.predict_body("json", body, None)[0]) == fast
    with pytest.raises(InputError, match=r"not valid JSON: Expecting value \(line 1, column 2\)"):
        serve_app.parse_json(b"[,]")


def test_workers(tmp_path):
    """--workers 2: each worker loads the bundle and answers as one would."""
    server = Server(PARTICIPATION, tmp_path / "workers.log", "--workers", "2")
    try:
        pred = Predictor.load(PARTICIPATION)
        want = pred.predict_proba(pd.DataFrame([GOOD]))[0]
        for _ in range(6):
            got = _post_json(server, "/predict", [GOOD]).json()["predictions"][0]["probability"]
            assert got == pytest.approx(want, abs=1e-6)
        assert server.client.get("/metadata").json()["target"]["column"] == "lfp"
    finally:
        server.client.close()
        server.stop()


def test_parse_size():
    assert parse_size("10MB") == 10_000_000
    assert parse_size("512KiB") == 524_288
    assert parse_size("1000") == 1000
    assert parse_size(2048) == 2048
    with pytest.raises(ValueError, match="not a size"):
        parse_size("ten")


def test_cli_serve_refuses_a_bad_bundle(tmp_path):
    r = subprocess.run([sys.executable, "-m", "binclf", "serve", str(tmp_path / "none")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "binclf", "serve", str(PARTICIPATION), "--max-body", "lots"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--max-body 'lots' is not a size" in r.stderr
