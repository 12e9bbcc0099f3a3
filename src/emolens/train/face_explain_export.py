"""Make a shipped face model explainable on onnxruntime alone: add graph outputs for each conv stage's
activations and for the gradient of every class's logit with respect to the pooled features and to
the activations of conv stage :data:`CAM_STAGE` (Grad-CAM's layer).

The networks (:class:`emolens.train.nets.FaceNet`) end with 4 conv stages, global average pooling and a
2-layer head ``Linear -> BatchNorm -> ReLU -> Linear``. For one face the gradient of logit ``c`` with
respect to the pooled features ``g`` is ``W1^T (m * s * W2[c])`` (``s``: the BatchNorm scale
``gamma / sqrt(var + eps)``, ``m``: the face's ReLU mask). This module
adds those few nodes (a ``(N, classes, features)`` output per network and view) and exposes the
stage activations (the last conv of each stage, after its ReLU) as outputs. The gradient is then taken
back to stage :data:`CAM_STAGE` with explicit backward nodes (ReLU masks, max-pool routing, transposed
convs), a ``(N, classes, channels, h, w)`` output ``cam_grad``; the ONNX metadata
(``emolens`` JSON, key ``explain``) lists them. Nothing else in the graph changes, so the
probabilities are bit-identical and the normal path (which fetches ``probs`` only) is unaffected.

Works on float graphs (ensembles with mirror averaging included) and on statically quantized (QDQ)
ones, whose tensors are read through extra ``DequantizeLinear`` copies. Needs ``onnx`` (train extra)::

    python -m emolens.train.face_explain_export src/emolens/models/face_default.onnx [...] [--card]
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

#: Prefix of every node, initializer and output this module adds.
PREFIX = "explain/"
#: Boolean graph input (default false) that switches the explain outputs on.
SWITCH = "explain"
#: Key of the explain block inside the model's ``emolens`` metadata JSON.
EXPLAIN_KEY = "explain"
_PASS = ("DequantizeLinear", "QuantizeLinear", "Identity", "Flatten")
_HEAD_PASS = (*_PASS, "Relu")
#: The conv stage (1-based) whose activations Grad-CAM weighs: chosen by the deletion test on FER2013
#: PublicTest (``benchmarks/bench_explain.py``), stage 2 of 4 (22x22 for a 44x44 input).
CAM_STAGE = 2


#: Operators that turn stored weights into the float weights the network reads (see
#: :func:`emolens.train.onnx_weights.store_int8`); DequantizeLinear is not one of them: its output
#: is kept private so that onnxruntime can still fuse it into an integer kernel.
_WEIGHT_OPS = {"Cast", "Mul", "Div", "Floor", "Sub", "Unsqueeze", "Concat", "Reshape", "Identity"}


def _strip(graph) -> None:  # noqa: ANN001
    """Remove what an earlier run added (so the rewrite is idempotent)."""
    for coll in (graph.node, graph.initializer, graph.output, graph.input):
        keep = [x for x in coll if not (x.name.startswith(PREFIX) or x.name == SWITCH)]
        del coll[:]
        coll.extend(keep)


def _const(graph, name: str) -> np.ndarray | None:  # noqa: ANN001
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _attr(node, name: str, default: object) -> object:  # noqa: ANN001
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _chain(graph, consumers: dict, start: str, path: object) -> list[tuple]:  # noqa: ANN001
    """The layers from stage tensor ``start`` to the global average pooling, as steps ``("pool", x, y)``,
    ``("conv", weight, pads)``, ``("relu", y)`` (``y``: the ReLU's output) and ``("gap", x)``. In a QDQ
    graph a conv's ReLU is folded into its output quantizer (clipping at 0): the dequantized output
    stands for ``y``."""
    steps: list[tuple] = []
    name, relu_due = start, False
    while True:
        node = next((n for n in consumers.get(name, []) if not n.name.startswith(PREFIX)), None)
        if node is None:
            raise ValueError(f"{path}: no GlobalAveragePool after {start}")
        op = node.op_type
        if op in ("MaxPool", "Conv", "GlobalAveragePool") and relu_due:
            steps.append(("relu", name))
            relu_due = False
        if op == "MaxPool":
            if (list(_attr(node, "kernel_shape", [])) != [2, 2] or list(_attr(node, "strides", [])) != [2, 2]
                    or any(_attr(node, "pads", [0])) or len(node.output) > 1):
                raise ValueError(f"{path}: only 2x2 max-pools with stride 2 are supported")
            steps.append(("pool", name, node.output[0]))
        elif op == "Conv":
            if (any(v != 1 for v in _attr(node, "strides", [1, 1])) or _attr(node, "group", 1) != 1
                    or any(v != 1 for v in _attr(node, "dilations", [1, 1]))):
                raise ValueError(f"{path}: only stride-1 ungrouped convs are supported")
            steps.append(("conv", node.input[1], list(_attr(node, "pads", [0, 0, 0, 0]))))
            relu_due = True
        elif op == "Relu":
            steps.append(("relu", node.output[0]))
            relu_due = False
        elif op == "GlobalAveragePool":
            steps.append(("gap", name))
            return steps
        elif op == "QuantizeLinear" and relu_due:
            scale, zero = (_const(graph, i) for i in node.input[1:3])
            if scale is None or zero is None or (np.iinfo(zero.dtype).min - int(zero)) * float(scale) != 0:
                raise ValueError(f"{path}: a conv without a ReLU (its quantizer does not clip at 0)")
        elif op not in _PASS and op != "Cast":
            raise ValueError(f"{path}: unexpected {op} between a conv stage and the pooling")
        name = node.output[0]


def _backprop(steps: list[tuple], grad: str, t: str, float_ref, local) -> list:  # noqa: ANN001
    """Nodes computing ``t + "cam_grad"``, ``(N, classes, channels, h, w)``: the gradient ``grad``
    ``(N, classes, features)`` of every class's logit w.r.t. the pooled features, taken back through
    ``steps`` (see :func:`_chain`): average pooling spreads it evenly, a ReLU passes it where its
    output is positive, a 2x2 max-pool routes it to the positions equal to their window's maximum,
    a conv is transposed (``ConvTranspose`` with the same weights). Classes ride along in the batch
    axis (``N * classes``). A max-pool window with tied maxima (in practice: all zero after a ReLU)
    passes the gradient to every tied position; Grad-CAM multiplies it by those zero activations."""
    from onnx import helper, numpy_helper

    nodes: list = []
    count = [0]

    def op(kind: str, inputs: list[str], **attrs: object) -> str:
        count[0] += 1
        out = f"{t}bp{count[0]}_{kind.lower()}"
        nodes.append(helper.make_node(kind, inputs, [out], name=out, **attrs))
        return out

    def const(tag: str, value: np.ndarray) -> str:
        out = f"{t}bpc_{tag}"
        if not any(n.output[0] == out for n in nodes):
            nodes.append(helper.make_node("Constant", [], [out], name=out, value=numpy_helper.from_array(value, out)))
        return out

    i64 = np.int64
    classes = op("Slice", [op("Shape", [grad]), const("one", np.array([1], i64)), const("two", np.array([2], i64))])

    def masked(g: str, act: str, mask: str) -> str:
        """``g`` (N*classes, F, h, w) times ``mask`` (N, F, h, w), the same for every class."""
        fhw = op("Slice", [op("Shape", [act]), const("one", np.array([1], i64)), const("four", np.array([4], i64))])
        shape5 = op("Concat", [const("minus", np.array([-1], i64)), classes, fhw], axis=0)
        shape4 = op("Concat", [const("minus", np.array([-1], i64)), fhw], axis=0)
        m5 = op("Unsqueeze", [mask, const("one", np.array([1], i64))])
        return op("Reshape", [op("Mul", [op("Reshape", [g, shape5]), m5]), shape4])

    g = grad
    for k, step in enumerate(reversed(steps)):
        kind = step[0]
        if kind == "gap":
            x = float_ref(step[1], t[2:] + f"bp_gap{k}")
            hw = op("Slice", [op("Shape", [x]), const("two", np.array([2], i64)), const("four", np.array([4], i64))])
            feats = op("Slice", [op("Shape", [grad]), const("two", np.array([2], i64)),
                                 const("three", np.array([3], i64))])
            g = op("Reshape", [g, op("Concat", [const("minus", np.array([-1], i64)), feats,
                                                const("ones2", np.array([1, 1], i64))], axis=0)])
            area = op("Cast", [op("ReduceProd", [hw], keepdims=0)], to=1)
            g = op("Div", [op("Expand", [g, op("Concat", [const("ones2", np.array([1, 1], i64)), hw], axis=0)]), area])
        elif kind == "relu":
            y = float_ref(step[1], t[2:] + f"bp_relu{k}")
            g = masked(g, y, op("Cast", [op("Greater", [y, const("zero", np.array(0, np.float32))])], to=1))
        elif kind == "pool":
            x, y = float_ref(step[1], t[2:] + f"bp_in{k}"), float_ref(step[2], t[2:] + f"bp_out{k}")
            scales = const("scales", np.array([1, 1, 2, 2], np.float32))
            resize = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
            up = op("Resize", [y, "", scales], **resize)
            rest = op("Sub", [op("Shape", [x]), op("Shape", [up])])  # an odd row/column the pool dropped
            pads = op("Concat", [const("zeros6", np.zeros(6, i64)), op("Slice", [
                rest, const("two", np.array([2], i64)), const("four", np.array([4], i64))])], axis=0)
            up = op("Pad", [up, pads, const("neginf", np.array(-np.inf, np.float32))])
            mask = op("Cast", [op("Equal", [x, up])], to=1)
            gu = op("Pad", [op("Resize", [g, "", scales], **resize), pads, const("zero", np.array(0, np.float32))])
            g = masked(gu, x, mask)
        elif kind == "conv":
            g = op("ConvTranspose", [g, local(step[1])], pads=step[2])
    fchw = op("Slice", [op("Shape", [g]), const("one", np.array([1], i64)), const("four", np.array([4], i64))])
    nodes.append(helper.make_node("Reshape", [g, op("Concat", [const("minus", np.array([-1], i64)), classes, fchw],
                                                    axis=0)], [t + "cam_grad"], name=t + "cam_grad"))
    return nodes


def add_explain_outputs(path: str | Path, out: str | Path | None = None) -> dict:
    """Rewrite the ONNX face model at ``path`` (or write to ``out``) with the explain outputs.

    The outputs come from one ``If`` node switched by a boolean input ``explain`` (default false, an
    overridable initializer): its branch re-runs the network, reading the main graph's weights, and
    returns the stage activations and gradients; otherwise it returns empty tensors. The main
    graph itself is untouched, so the normal path keeps its speed and its exact probabilities.
    Returns the ``explain`` metadata block: ``{"switch", "branches": [{"member", "flip", "stages",
    "grad"}], ...}``, one branch per network and view (a mirrored view has ``flip`` true).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from emolens.expression import META_KEY

    model = onnx.load(str(path))
    graph = model.graph
    _strip(graph)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)

    # weights computed from initializers alone (their int8/int4/float16 storage, shared views) are
    # folded by onnxruntime at load time in the main graph: the branch reads those, not a copy
    fixed = {i.name for i in graph.initializer}
    for n in graph.node:
        if n.op_type in _WEIGHT_OPS and all(i in fixed for i in n.input if i):
            fixed.update(n.output)

    def local(name: str) -> str:
        """The name of a main-graph tensor inside the explain branch (its copy, or the outer value)."""
        return "x/" + name if name in producer and name not in fixed else name

    body = []
    for n in graph.node:  # the whole network again, inside the branch; weights are read from the outer scope
        if all(o in fixed for o in n.output):
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.name = "x/" + (n.name or n.output[0])
        copy.input[:] = [local(i) if i else i for i in n.input]
        copy.output[:] = [local(o) for o in n.output]
        body.append(copy)

    def float_ref(name: str, tag: str) -> str:
        """A float tensor equal to ``name`` inside the branch; a DequantizeLinear output is read through
        a private copy (another consumer would stop onnxruntime fusing that QDQ pair into an integer kernel)."""
        node = producer.get(name)
        if node is None or node.op_type != "DequantizeLinear":
            return local(name)
        dq = helper.make_node("DequantizeLinear", [local(i) for i in node.input], ["x/" + tag], name="x/" + tag)
        dq.attribute.extend(node.attribute)
        body.append(dq)
        return "x/" + tag

    def forward(name: str, op: str) -> object:
        """The first ``op`` node downstream of tensor ``name``, through Q/DQ/Identity/Flatten/Relu."""
        while True:
            nxt = consumers.get(name, [])
            if not nxt:
                raise ValueError(f"{path}: no {op} after {name}")
            node = nxt[0]
            if node.op_type == op:
                return node
            if node.op_type not in _HEAD_PASS:
                raise ValueError(f"{path}: unexpected {node.op_type} between the pooling and the head's {op}")
            name = node.output[0]

    branches, inner, outputs = [], [], []
    flips = {False: 0, True: 0}
    for gap in [n for n in graph.node if n.op_type == "GlobalAveragePool"]:
        b = len(branches)
        stages, flip, name = [], False, gap.input[0]
        while name in producer:  # back to the input: stage tensors (inputs of the max-pools), mirroring
            node = producer[name]
            if node.op_type == "MaxPool":
                stages.append(node.input[0])
            elif node.op_type == "Slice":
                steps = _const(graph, node.input[4]) if len(node.input) > 4 else None
                axes = _const(graph, node.input[3]) if len(node.input) > 3 else None
                if steps is None or axes is None or list(steps) != [-1] or int(axes[0]) % 4 != 3:
                    raise ValueError(f"{path}: only mirror averaging is supported (found a crop Slice)")
                flip = True
            elif node.op_type not in ("Conv", "Relu", "Div", "Sub", "Mul", "Add", *_PASS):
                raise ValueError(f"{path}: unexpected {node.op_type} in the feature extractor")
            name = node.input[0]
        stages = stages[::-1]
        if not stages:
            raise ValueError(f"{path}: no conv stages before {gap.name}")
        gemm1 = forward(gap.output[0], "Gemm")
        bn = forward(gemm1.output[0], "BatchNormalization")
        gemm2 = forward(bn.output[0], "Gemm")
        if _attr(gemm1, "transB", 0) != 1 or _attr(gemm2, "transB", 0) != 1:
            raise ValueError(f"{path}: expected Gemm with transB=1 in the head")
        p = f"b{b}/"
        w1 = float_ref(gemm1.input[1], p + "w1")
        w2 = float_ref(gemm2.input[1], p + "w2")
        gamma = float_ref(bn.input[1], p + "gamma")
        var = float_ref(bn.input[4], p + "var")
        hidden = float_ref(gemm2.input[0], p + "hidden")  # after the ReLU (QDQ: the ReLU is the quantizer's clip)
        t = "x/" + p
        consts = {"eps": np.array(float(_attr(bn, "epsilon", 1e-5)), np.float32), "zero": np.array(0, np.float32),
                  "axis1": np.array([1], np.int64)}
        body += [helper.make_node("Constant", [], [t + k], name=t + k, value=numpy_helper.from_array(v, t + k))
                 for k, v in consts.items()]
        body += [
            helper.make_node("Add", [var, t + "eps"], [t + "var_eps"], name=t + "var_eps"),
            helper.make_node("Sqrt", [t + "var_eps"], [t + "std"], name=t + "std"),
            helper.make_node("Div", [gamma, t + "std"], [t + "scale"], name=t + "scale"),
            helper.make_node("Mul", [w2, t + "scale"], [t + "w2s"], name=t + "w2s"),  # (C, H)
            helper.make_node("Greater", [hidden, t + "zero"], [t + "active"], name=t + "active"),
            helper.make_node("Cast", [t + "active"], [t + "mask"], name=t + "mask", to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", [t + "mask", t + "axis1"], [t + "mask3"], name=t + "mask3"),  # (N,1,H)
            helper.make_node("Mul", [t + "mask3", t + "w2s"], [t + "dh"], name=t + "dh"),  # (N, C, H)
            helper.make_node("MatMul", [t + "dh", w1], [t + "grad"], name=t + "grad"),  # (N, C, F)
        ]
        cam = min(CAM_STAGE, len(stages)) - 1
        body += _backprop(_chain(graph, consumers, stages[cam], path), t + "grad", t, float_ref, local)
        names = [float_ref(s, p + f"stage{i + 1}") for i, s in enumerate(stages)] + [t + "grad", t + "cam_grad"]
        inner += names
        outputs += [PREFIX + p + f"stage{i + 1}" for i in range(len(stages))] + [PREFIX + p + "grad",
                                                                                   PREFIX + p + "cam_grad"]
        branches.append({"member": flips[flip], "flip": flip, "stages": outputs[-len(stages) - 2: -2],
                         "grad": outputs[-2], "cam_stage": cam + 1, "cam_grad": outputs[-1]})
        flips[flip] += 1
    if not branches:
        raise ValueError(f"{path}: no GlobalAveragePool: not a FaceNet-style model")
    if flips[True] not in (0, flips[False]):
        raise ValueError(f"{path}: {flips[True]} mirrored views for {flips[False]} networks")
    ranks = [5 if name.endswith("cam_grad") else 3 if name.endswith("grad") else 4 for name in outputs]
    then_graph = helper.make_graph(body, "explain_on", [], [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * r) for n, r in zip(inner, ranks)])
    empty = [helper.make_node("Constant", [], [f"e/{i}"], value=numpy_helper.from_array(
        np.zeros([0] * r, np.float32), f"e/{i}")) for i, r in enumerate(ranks)]
    else_graph = helper.make_graph(empty, "explain_off", [], [
        helper.make_tensor_value_info(f"e/{i}", TensorProto.FLOAT, [None] * r) for i, r in enumerate(ranks)])
    graph.node.append(helper.make_node("If", [SWITCH], outputs, name=PREFIX + "if", then_branch=then_graph,
                                       else_branch=else_graph))
    graph.input.append(helper.make_tensor_value_info(SWITCH, TensorProto.BOOL, []))
    graph.initializer.append(numpy_helper.from_array(np.array(False), SWITCH))  # default: off
    graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * r)
                        for n, r in zip(outputs, ranks))
    block = {"switch": SWITCH, "branches": branches,
             "grad": "d logit / d pooled features, (N, classes, features)",
             "stages": "last conv of each stage after its ReLU, (N, channels, h, w)",
             "cam_grad": "d logit / d activations of stage cam_stage, (N, classes, channels, h, w)"}
    meta_prop = next((m for m in model.metadata_props if m.key == META_KEY), None)
    if meta_prop is None:
        meta_prop = model.metadata_props.add()
        meta_prop.key, meta_prop.value = META_KEY, "{}"
    meta = json.loads(meta_prop.value)
    meta[EXPLAIN_KEY] = block
    meta_prop.value = json.dumps(meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(out or path))
    return block


def remove_explain_outputs(path: str | Path, out: str | Path) -> None:
    """Write the model at ``path`` without the explain outputs to ``out`` (the graph as exported)."""
    import onnx

    from emolens.expression import META_KEY

    model = onnx.load(str(path))
    _strip(model.graph)
    for prop in model.metadata_props:
        if prop.key == META_KEY:
            meta = json.loads(prop.value)
            meta.pop(EXPLAIN_KEY, None)
            prop.value = json.dumps(meta)
    onnx.save(model, str(out))


def update_card_hash(onnx_path: str | Path) -> None:
    """Rewrite the sha256 and size recorded in a shipped model's card (``.json`` and ``.md``)."""
    import re

    onnx_path = Path(onnx_path)
    data = onnx_path.read_bytes()
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
    card = onnx_path.with_suffix(".json")
    if card.is_file():
        meta = json.loads(card.read_text())
        meta["sha256"], meta["size_bytes"] = sha, size
        card.write_text(json.dumps(meta, indent=2) + "\n")
    md = onnx_path.with_suffix(".md")
    if md.is_file():
        md.write_text(re.sub(r"\*\*sha256\*\*: `[0-9a-f]{64}` \([0-9,]+ bytes\)",
                             f"**sha256**: `{sha}` ({size:,} bytes)", md.read_text()))


def main(argv: list[str] | None = None) -> None:
    """``python -m emolens.train.face_explain_export MODEL.onnx... [--card]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m emolens.train.face_explain_export",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--card", action="store_true", help="update the sha256/size in the model cards next to them")
    args = ap.parse_args(argv)
    for path in args.models:
        block = add_explain_outputs(path)
        if args.card:
            update_card_hash(path)
        print(f"{path}: {len(block['branches'])} branch(es), {len(block['branches'][0]['stages'])} stages each")


if __name__ == "__main__":
    main()
