"""From a read table to model inputs: column roles, the target, splits, fitted preprocessing."""

from binclf.data.schema import ColumnSpec, Schema, infer_schema
from binclf.data.split import stratified_split
from binclf.data.target import TargetInfo, encode_target

__all__ = ["ColumnSpec", "Schema", "TargetInfo", "encode_target", "infer_schema", "stratified_split"]
