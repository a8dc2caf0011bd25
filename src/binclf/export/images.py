"""The ONNX graph of an image bundle: decoded, resized pixels in, calibrated probability and label out.

**Input** ``image``: ``float32 [N, C, S, S]`` (channels first), the pixels
divided by 255 (so in [0, 1]), already converted to the bundle's channel
layout (``L``: 1 channel, ``RGB``: 3) and resized to ``S x S``: the layout
torchvision's ``ToTensor`` gives, and what
``np.asarray(im.convert(mode).resize((S, S), Image.BILINEAR), np.float32) / 255``
gives after moving the channels first. Decoding and resizing stay outside the
graph (ONNX has no image decoder); :func:`binclf.io.images.decode_image_bytes`
gives exactly the ``uint8`` pixels ``binclf predict`` uses.

**Graph**: the per-channel normalisation by the training images' mean and
standard deviation, the CNN (each convolution with its BatchNorm folded in,
as inference computes it; dropout and augmentation are off in evaluation),
global average pooling, the output layer, each member's logit shift, the
blend, the calibrator and the threshold: the same stages as the table graph
(:mod:`binclf.export.graph`), whose calibration and decision nodes it reuses.

Outputs ``probability`` ``float32 [N]`` and ``label`` ``string [N]``.
Parity with ``binclf predict`` is checked by ``tests/test_export_images.py``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from binclf import __version__
from binclf.export.graph import (
    ML_OPSET,
    OPSET,
    ExportError,
    _blend,
    _calibrate,
    _decide,
    _Graph,
    output_signature,
)

__all__ = ["build_image_onnx", "image_signature"]

INPUT = "image"


def _folded_convs(module: Any, part: str) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """``(weight, bias, stride, padding)`` of each conv-BatchNorm-ReLU block, BatchNorm folded into the conv."""
    layers = list(module.body)
    if len(layers) % 3:
        raise ExportError(f"{part}: the CNN does not have the conv-BatchNorm-ReLU layout binclf exports")
    out = []
    for conv, bn, relu in zip(layers[0::3], layers[1::3], layers[2::3]):
        if not (isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d)
                and isinstance(relu, torch.nn.ReLU) and conv.groups == 1 and conv.dilation == (1, 1)):
            raise ExportError(f"{part}: the CNN does not have the conv-BatchNorm-ReLU layout binclf exports")
        # In float64, then rounded once: y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta.
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w = conv.weight.detach().double() * scale.view(-1, 1, 1, 1)
        b = bn.bias.detach().double() - bn.running_mean.double() * scale
        if conv.bias is not None:
            b = b + conv.bias.detach().double() * scale
        out.append((w.float().numpy(), b.float().numpy(), int(conv.stride[0]), int(conv.padding[0])))
    return out


def _cnn_logits(g: _Graph, member: Any, x: str, part: str) -> str:
    """Logits ``[N]`` float32 of one CNN member on normalised images ``x`` ``[N, C, S, S]``."""
    from binclf.nn.models.cnn import ImageCNN

    module = member.module.eval()
    if type(module) is not ImageCNN:
        raise ExportError(f"{part}: model kind {member.kind!r} has no ONNX export for images; binclf exports cnn")
    for i, (w, b, stride, pad) in enumerate(_folded_convs(module, part)):
        x = g.op("Conv", x, g.const(w, f"{part}_conv{i}_w"), g.const(b, f"{part}_conv{i}_b"),
                 kernel_shape=list(w.shape[2:]), strides=[stride, stride], pads=[pad] * 4)
        x = g.op("Relu", x)
    x = g.op("Flatten", g.op("GlobalAveragePool", x), axis=1)  # [N, width]
    out = module.output
    y = g.linear(x, out.weight.detach().numpy(), out.bias.detach().numpy(), f"{part}_out")  # [N, 1]
    return g.op("Squeeze", y, g.const([-1], "axis", np.int64))


def image_signature(predictor: Any) -> dict[str, Any]:
    """The graph's input and outputs, plus what a caller needs to feed and read them (JSON-ready)."""
    pre = predictor.preprocessor
    mode = "greyscale (L)" if pre.channels == 1 else "RGB"
    return {
        "kind": "image",
        "inputs": [{
            "name": INPUT, "type": "float32", "shape": ["N", pre.channels, pre.size, pre.size], "layout": "NCHW",
            "about": f"pixels / 255 in [0, 1], {mode}, resized to {pre.size}x{pre.size}; "
                     "normalised inside the graph",
            "mode": pre.mode, "size": pre.size, "channels": pre.channels,
            "mean": list(pre.mean), "std": list(pre.std),
        }],
        **output_signature(predictor),
    }


def build_image_onnx(predictor: Any) -> Any:
    """The ONNX model of an image bundle's prediction path (see the module docstring).

    Parameters
    ----------
    predictor : ImagePredictor
        The loaded image bundle.

    Returns
    -------
    onnx.ModelProto
        Input ``image`` ``float32 [N, C, S, S]`` in [0, 1]; outputs ``probability``
        ``float32 [N]`` and ``label`` ``string [N]``; the signature as JSON in
        ``metadata_props["binclf.signature"]``.
    """
    g = _Graph()
    onnx, helper = g.onnx, g.helper
    TP = onnx.TensorProto
    pre = predictor.preprocessor
    sig = image_signature(predictor)
    c, s = pre.channels, pre.size
    # As ImagePreprocessor.transform: (x - mean) / std in float32.
    x = g.op("Sub", INPUT, g.const(np.asarray(pre.mean, np.float32).reshape(1, c, 1, 1), "mean"))
    x = g.op("Div", x, g.const(np.asarray(pre.std, np.float32).reshape(1, c, 1, 1), "std"))
    z = _blend(g, predictor.members, x, member_logits=_cnn_logits)
    p = _calibrate(g, predictor.calibrator, z)
    g.nodes.append(helper.make_node("Cast", [p], ["probability"], to=TP.FLOAT))
    g.nodes.append(helper.make_node("Identity", [_decide(g, predictor, p)], ["label"]))
    graph = helper.make_graph(
        g.nodes, "binclf_image", [helper.make_tensor_value_info(INPUT, TP.FLOAT, ["N", c, s, s])],
        [helper.make_tensor_value_info("probability", TP.FLOAT, ["N"]),
         helper.make_tensor_value_info("label", TP.STRING, ["N"])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="binclf", producer_version=__version__,
    )
    model.ir_version = 9
    model.doc_string = (f"binclf image bundle: P({predictor.target.column} = {sig['outputs'][1]['values'][1]}) "
                        f"and its label, from image float32 [N, {c}, {s}, {s}] = pixels / 255")
    onnx.helper.set_model_props(model, {"binclf.signature": json.dumps(sig, sort_keys=True),
                                        "binclf.version": __version__})
    onnx.checker.check_model(model)
    return model
