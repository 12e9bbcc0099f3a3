"""Add a mirrored view to an exported face model: the graph scores the face and its left-right
mirror and averages the two logits before the softmax (test-time flip averaging), without the
training checkpoints.

The network's nodes that depend on the input are copied once, reading the mirrored input (a
``Slice`` with step -1 on the width axis, the form :mod:`emolens.train.face_explain_export`
recognises as a mirrored view); the weights are shared, so the file grows by a few kB. Statically
quantized (QDQ) graphs keep their integer kernels in both views. Needs ``onnx`` (train extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Suffix of every tensor of the mirrored copy.
MIRROR = "/mirror"


def add_mirror_view(path: str | Path, out: str | Path) -> None:
    """Write ``path`` (a one-view model whose output is a ``Softmax`` of logits, without explain
    outputs) to ``out`` with the mirrored view averaged in."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    source = graph.input[0].name
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    if len(softmax) != 1 or softmax[0].output[0] != graph.output[0].name:
        raise ValueError(f"{path}: expected one Softmax producing the output {graph.output[0].name!r}")
    if any(n.op_type == "Slice" and n.input[0] == source for n in graph.node):
        raise ValueError(f"{path}: the model already has a mirrored or cropped view")
    head = softmax[0]
    logits = head.input[0]
    depends = {source}
    copies = []
    for node in graph.node:
        if node is head or not any(i in depends for i in node.input):
            continue
        depends.update(node.output)
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = (node.name or node.output[0]) + MIRROR
        copy.input[:] = [i + MIRROR if i in depends else i for i in node.input]
        copy.output[:] = [o + MIRROR for o in node.output]
        copies.append(copy)
    consts = {"starts": [-1], "ends": [np.iinfo(np.int64).min], "axes": [3], "steps": [-1]}
    graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), f"mirror/{k}") for k, v in consts.items())
    graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "mirror/half"))
    flip = helper.make_node("Slice", [source, *(f"mirror/{k}" for k in consts)], [source + MIRROR], name="mirror/flip")
    total = helper.make_node("Add", [logits, logits + MIRROR], ["mirror/sum"], name="mirror/sum")
    mean = helper.make_node("Mul", ["mirror/sum", "mirror/half"], ["mirror/mean"], name="mirror/mean")
    nodes = [n for n in graph.node if n is not head]
    head.input[0] = "mirror/mean"
    del graph.node[:]
    graph.node.extend([*nodes, flip, *copies, total, mean, head])
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
