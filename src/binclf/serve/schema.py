"""The server's typed request and response models, built from the bundle's input schema.

Each feature column becomes one typed, nullable field of a ``Record`` model
(``pydantic.create_model``): numeric columns are numbers, categorical columns
keep the type they were read with in training (text, integer codes, booleans),
and the known levels are listed as examples. A column whose training data had
missing values may be left out of a record; every other column is required
(``null`` still means missing). These models document the API (the OpenAPI
schema at ``/openapi.json``); requests are parsed by :mod:`binclf.serve.rows`,
which also accepts the other spellings ``binclf predict`` accepts (numeric text,
``1`` for ``"1"``).
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter, create_model

from binclf.data.preprocessing import Preprocessor

__all__ = ["request_models", "Prediction", "PredictResponse", "InvocationsResponse", "ErrorBody", "Health"]

_SHOWN_LEVELS = 20


def _value_type(role: str, dtype: str) -> Any:
    if role == "numeric":
        return float
    d = dtype.lower()
    if d.startswith(("int", "uint")):
        return int
    if d.startswith("float"):
        return float
    if d.startswith("bool"):
        return bool
    return str


def record_model(preprocessor: Preprocessor, optional: frozenset[str]) -> type[BaseModel]:
    """``Record``: one typed, nullable field per feature column (aliases carry the column names)."""
    levels = {st["name"]: st["levels"] for st in preprocessor.categorical_}
    fields: dict[str, Any] = {}
    for i, spec in enumerate(preprocessor.schema.columns):
        typ = _value_type(spec.role, spec.dtype)
        if spec.role == "numeric":
            about = "a number; null is missing"
        else:
            known = levels.get(spec.name, [])
            shown = ", ".join(known[:_SHOWN_LEVELS]) + (" ..." if len(known) > _SHOWN_LEVELS else "")
            about = f"a category (known: {shown}); other values are 'unknown', null is missing"
        if spec.name in optional:
            about += "; may be left out (missing)"
        extra: dict[str, Any] = {}
        if spec.role == "categorical" and levels.get(spec.name) and typ is str:
            extra["examples"] = levels[spec.name][:_SHOWN_LEVELS]
        default = None if spec.name in optional else ...
        # Safe attribute names; the column name is the alias (columns may be keywords, start with '_' ...).
        fields[f"c{i}"] = (
            Union[typ, None],
            Field(default, alias=spec.name, description=about, allow_inf_nan=False, **extra)
            if typ is float
            else Field(default, alias=spec.name, description=about, **extra),
        )
    return create_model(
        "Record",
        __config__=ConfigDict(extra="allow", populate_by_name=False),
        __doc__="One row: the model's feature columns (other keys are ignored).",
        **fields,
    )


def request_models(preprocessor: Preprocessor, optional: frozenset[str]) -> dict[str, Any]:
    """JSON schemas of the ``/predict`` and ``/invocations`` bodies, with their ``$defs``."""
    record = record_model(preprocessor, optional)
    records = Annotated[list[record], Field(min_length=1)]  # type: ignore[valid-type]

    class Rows(BaseModel):
        """``{"rows": [record, ...]}``."""

        model_config = ConfigDict(extra="forbid")
        rows: records  # type: ignore[valid-type]

    class PredictBody(RootModel[Union[records, Rows]]):  # type: ignore[valid-type]
        """A list of records, or ``{"rows": [...]}``."""

    class Params(BaseModel):
        """MLflow ``params``: an optional threshold for the decisions."""

        model_config = ConfigDict(extra="forbid")
        threshold: Annotated[float, Field(ge=0.0, le=1.0)] | None = None

    class Split(BaseModel):
        """pandas ``orient="split"``: column names and rows of values in that order."""

        columns: list[str]
        data: Annotated[list[list[Union[str, float, int, bool, None]]], Field(min_length=1)]
        index: list[Any] | None = None

    def by(key: str, typ: Any, doc: str) -> type[BaseModel]:
        return create_model(
            f"By_{key}", __config__=ConfigDict(extra="forbid"), __doc__=doc,
            **{key: (typ, ...), "params": (Params | None, None)},
        )

    class InvocationsBody(
        RootModel[
            Union[
                by("dataframe_records", records, "MLflow: a list of records."),
                by("dataframe_split", Split, "MLflow: pandas' split orientation."),
                by("instances", records, "MLflow (TF serving): a list of records."),
                by("inputs", Union[records, dict[str, list[Union[str, float, int, bool, None]]]],
                   "MLflow (TF serving): records, or column: list of values."),
            ]
        ]
    ):
        """The MLflow scoring protocol: exactly one of its input keys, and optional ``params``."""

    out = {}
    for name, model in (("PredictBody", PredictBody), ("InvocationsBody", InvocationsBody)):
        out[name] = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
    return out


class Prediction(BaseModel):
    """One row's answer."""

    probability: float = Field(description="calibrated probability of the positive class")
    prediction: Union[str, int, float, bool] = Field(
        description="the positive or negative label at the threshold, or 'abstain' inside the bundle's abstain band"
    )
    abstain: bool | None = Field(None, description="present when the bundle's abstain band applies")


class PredictResponse(BaseModel):
    """``/predict``: one prediction per input row, in request order."""

    predictions: list[Prediction]
    threshold: float = Field(description="the threshold the decisions used")
    abstain_band: list[float] | None = Field(None, description="[low, high): abstain inside, when the bundle has a band")


class InvocationsResponse(BaseModel):
    """``/invocations`` (MLflow): one prediction per input row, in request order."""

    predictions: list[Prediction]


class ProblemItem(BaseModel):
    row: int | None = Field(description="0-based row in request order, when one row is at fault")
    column: str | None = Field(description="the column at fault, when one is")
    message: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    detail: str
    problems: list[ProblemItem] = []


class Health(BaseModel):
    status: str
