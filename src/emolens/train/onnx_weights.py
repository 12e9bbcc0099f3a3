"""How an exported ONNX model stores its weights: float16, int8 or int4 per output channel, each
unpacked to float32 by a few nodes that onnxruntime folds at load time (so compute stays float32);
folding the storage back to float32; and int8 QDQ quantization with calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def store_fp16(path: str | Path) -> None:
    """Store an ONNX model's float32 weights as float16 (half the file size), each followed by a
    Cast back to float32: compute stays float32 (onnxruntime folds the casts at load time)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) == 0:
            continue
        array = numpy_helper.to_array(init)
        half_name = init.name + "_fp16"
        casts.append((init.name, half_name, numpy_helper.from_array(array.astype(np.float16), half_name)))
    for name, half_name, tensor in casts:
        graph.initializer.remove(next(i for i in graph.initializer if i.name == name))
        graph.initializer.append(tensor)
        graph.node.insert(0, helper.make_node("Cast", [half_name], [name], to=onnx.TensorProto.FLOAT))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


#: Weight tensors with at least this many values are stored as int4 by ``weights="int4"`` (for the
#: width-64 FaceNet: the convolutions of stages 3 and 4, 80 % of its weights).
INT4_MIN = 2 ** 18


def store_int8(path: str | Path, min_size: int = 4096, int4_min: int = 0) -> None:
    """Store large float32 weight tensors (conv kernels, linear matrices) as int8 with one float
    scale per output channel (symmetric), followed by ``Cast`` and ``Mul`` back to float32: a
    quarter of the file size; onnxruntime folds both ops at load time, so compute stays float32.

    With ``int4_min`` > 0, tensors of at least that many values get 4 bits instead (-7..7, two per
    byte, unpacked by ``Cast``/``Div``/``Floor`` arithmetic that onnxruntime folds the same way)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    done: list[tuple[str, list[onnx.NodeProto]]] = []
    for init in list(graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) < 2 or np.prod(init.dims) < min_size:
            continue
        w = numpy_helper.to_array(init)
        name = init.name
        four = bool(int4_min) and w.size >= int4_min and w.size % 2 == 0  # (odd sizes: int8)
        top = 7 if four else 127
        scale = np.abs(w.reshape(len(w), -1)).max(1) / top
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32).reshape(-1, *([1] * (w.ndim - 1)))
        q = np.clip(np.round(w / scale), -top, top).astype(np.int8)
        graph.initializer.remove(init)
        graph.initializer.append(numpy_helper.from_array(scale, name + "_scale"))
        if four:
            graph.initializer.extend([numpy_helper.from_array(pack_int4(q), name + "_q4"),
                                      numpy_helper.from_array(np.array(w.shape, np.int64), name + "_shape")])
            nodes = _int4_unpack(name)
        else:
            graph.initializer.append(numpy_helper.from_array(q, name + "_q"))
            nodes = [helper.make_node("Cast", [name + "_q"], [name + "_f"], to=onnx.TensorProto.FLOAT)]
        done.append((name, nodes + [helper.make_node("Mul", [name + "_f", name + "_scale"], [name])]))
    if any(name + "_q4" in {i.name for i in graph.initializer} for name, _ in done):
        graph.initializer.extend([numpy_helper.from_array(np.array(v, np.float32), f"int4_{v}") for v in (8, 16)]
                                 + [numpy_helper.from_array(np.array([1], np.int64), "int4_axis"),
                                    numpy_helper.from_array(np.array([-1], np.int64), "int4_flat")])
    for _, nodes in reversed(done):
        for node in reversed(nodes):
            graph.node.insert(0, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def pack_int4(q: np.ndarray) -> np.ndarray:
    """An even number of values -8..7 (any shape) -> ``uint8`` bytes holding two each, first in the
    high nibble."""
    flat = (q.reshape(-1).astype(np.int16) + 8).astype(np.uint8)
    return (flat[0::2] << 4 | flat[1::2]).astype(np.uint8)


def _int4_unpack(name: str) -> list:
    """Nodes turning ``<name>_q4`` (:func:`pack_int4`) into ``<name>_f`` float32 of ``<name>_shape``."""
    import onnx
    from onnx import helper

    t = f"{name}_int4/"
    nodes = [
        helper.make_node("Cast", [name + "_q4"], [t + "bytes"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Div", [t + "bytes", "int4_16"], [t + "div"]),
        helper.make_node("Floor", [t + "div"], [t + "high"]),
        helper.make_node("Mul", [t + "high", "int4_16"], [t + "high16"]),
        helper.make_node("Sub", [t + "bytes", t + "high16"], [t + "low"]),
        helper.make_node("Unsqueeze", [t + "high", "int4_axis"], [t + "h1"]),
        helper.make_node("Unsqueeze", [t + "low", "int4_axis"], [t + "l1"]),
        helper.make_node("Concat", [t + "h1", t + "l1"], [t + "pairs"], axis=1),
        helper.make_node("Reshape", [t + "pairs", "int4_flat"], [t + "all"]),
    ]
    nodes += [helper.make_node("Reshape", [t + "all", name + "_shape"], [t + "shaped"]),
              helper.make_node("Sub", [t + "shaped", "int4_8"], [name + "_f"])]
    return nodes


#: The operators :func:`store_int8`, :func:`store_fp16` and :func:`_int4_unpack` put in front of a weight.
_STORAGE_OPS = {"Cast", "Mul", "Div", "Floor", "Sub", "Unsqueeze", "Concat", "Reshape"}


def fold_weight_storage(path: str | Path, out: str | Path) -> None:
    """Write ``path`` with its stored weights (float16, int8, int4 and their ``Cast``/``Mul`` chains
    in the main graph, computed from initializers alone) folded back into float32 initializers, so
    that :func:`store_int8` / :func:`store_fp16` can store them again, e.g. with fewer bits. The
    explain outputs are removed (:func:`~emolens.train.face_explain_export.add_explain_outputs`
    adds them back)."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    from emolens.train.face_explain_export import _strip

    model = onnx.load(str(path))
    graph = model.graph
    _strip(graph)
    consts = {i.name for i in graph.initializer}
    folded, keep = [], []
    for node in graph.node:
        if node.op_type in _STORAGE_OPS and all(i in consts for i in node.input if i):
            folded.append(node)
            consts.update(node.output)
        else:
            keep.append(node)
    used = {i for n in keep for i in n.input} | {o.name for o in graph.output}
    wanted = sorted({o for n in folded for o in n.output} & used)
    sub = onnx.helper.make_graph(folded, "fold", [], [onnx.helper.make_tensor_value_info(w, 0, None) for w in wanted],
                                 initializer=list(graph.initializer))
    values = ReferenceEvaluator(onnx.helper.make_model(sub, opset_imports=model.opset_import)).run(None, {})
    inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits + [numpy_helper.from_array(np.asarray(v), w) for w, v in zip(wanted, values)])
    del graph.node[:]
    graph.node.extend(keep)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray) -> None:
    """Static int8 quantization (onnxruntime QDQ: per-channel int8 weights, uint8 activations
    calibrated on ``calibration`` faces ``uint8 (N, 44, 44)``): the integer kernels onnxruntime
    runs with VNNI on CPUs that have it."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"faces": calibration[i: i + 64, None].astype(np.float32)}
                                 for i in range(0, len(calibration), 64)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    import onnx

    softmax = [n.name for n in onnx.load(str(fp32_path)).graph.node if n.op_type == "Softmax"]
    quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=softmax)  # the softmax stays float: probabilities keep their resolution
