"""ONNX export of a whole bundle: ``binclf export BUNDLE -o model.onnx`` (needs ``binclf[onnx]``)."""

from binclf.export.graph import ExportError, build_onnx, export_onnx, signature

__all__ = ["ExportError", "build_onnx", "export_onnx", "signature"]
