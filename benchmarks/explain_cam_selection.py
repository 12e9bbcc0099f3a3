"""How the ``gradcam`` method's layer and form were chosen: Grad-CAM and HiResCAM on conv stages
2, 3 and 4 (and stages 3+4 combined), deletion test on FER2013 **PublicTest** faces (the choosing
set; PrivateTest is reported once, by ``bench_explain.py``). Gradients are computed with torch
from the ONNX weights (needs the ``train`` extra). Run against the models as they were before the
explain branch was extended to stage 2 (commit c0f4a39: ``git show c0f4a39:src/emolens/models/face_default.onnx``);
results in ``benchmarks/results/explain_cam_selection.md``.

    python benchmarks/explain_cam_selection.py default 1200 PublicTest
    python benchmarks/explain_cam_selection.py accurate 600 PublicTest
"""
# ruff: noqa
import sys, time, json
from collections import defaultdict
import numpy as np, onnx, torch, torch.nn.functional as F
from onnx import numpy_helper, helper
from emolens.datasets import load_fer2013
from emolens.expression import ExpressionModel
from emolens.explanations import _require_block, _run_explain, _to_frame, deletion_drops

name = sys.argv[1]; n = int(sys.argv[2])
net = ExpressionModel(name, threads=1)
m = onnx.load(f"src/emolens/models/face_{name}.onnx"); g = m.graph
inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
for nd in g.node:
    if nd.op_type == "Constant" and nd.attribute[0].name == "value":
        inits[nd.output[0]] = numpy_helper.to_array(nd.attribute[0].t)
prod = {o: nd for nd in g.node for o in nd.output}
cons = defaultdict(list)
for nd in g.node:
    for i in nd.input: cons[i].append(nd)
def val(t):
    if t in inits: return inits[t].astype(np.float32)
    nd = prod[t]
    if nd.op_type == "DequantizeLinear":
        x = inits[nd.input[0]].astype(np.float32); s = inits[nd.input[1]]; z = inits[nd.input[2]].astype(np.float32) if len(nd.input) > 2 else 0
        ax = next((helper.get_attribute_value(a) for a in nd.attribute if a.name == "axis"), 1)
        if np.ndim(s) == 1:
            sh = [1] * x.ndim; sh[ax] = -1; s = s.reshape(sh); z = np.reshape(z, sh) if np.ndim(z) else z
        return ((x - z) * s).astype(np.float32)
    if nd.op_type in ("Identity", "Cast"): return val(nd.input[0]).astype(np.float32)
    if nd.op_type == "Mul": return (val(nd.input[0]) * val(nd.input[1])).astype(np.float32)
    raise ValueError(nd.op_type)
def att(nd, k, d):
    return next((helper.get_attribute_value(a) for a in nd.attribute if a.name == k), d)
block = _require_block(net)
# stage tensors in branch -> original names: explain/bX/stageK is output of If; map via the If then_branch outputs
ifn = next(nd for nd in g.node if nd.op_type == "If")
thenb = next(a.g for a in ifn.attribute if a.name == "then_branch")
inner_out = [o.name for o in thenb.output]
bodyprod = {o: nd for nd in thenb.node for o in nd.output}
def orig(inner):  # inner name -> main-graph tensor name
    if inner.startswith("x/b"):  # DQ copy
        nd = bodyprod[inner]; return "DQCOPY", nd
    return inner[2:] if inner.startswith("x/") else inner
def stage_chain(s3):
    """ops from stage3 tensor (input of MaxPool) to GAP output"""
    ops = []; t = s3
    # go to MaxPool consuming s3 (or via QuantizeLinear/Dequant)
    while True:
        nxt = [c for c in cons[t] if not c.name.startswith("explain")]
        nd = nxt[0]
        if nd.op_type == "MaxPool": ops.append(("pool", att(nd, "kernel_shape", [2, 2]), att(nd, "strides", [2, 2])))
        elif nd.op_type == "Conv":
            W = val(nd.input[1]); B = val(nd.input[2]) if len(nd.input) > 2 else None
            ops.append(("conv", W, B, att(nd, "pads", [1, 1, 1, 1])))
        elif nd.op_type == "Relu": ops.append(("relu",))
        elif nd.op_type == "GlobalAveragePool": ops.append(("gap",)); return ops
        elif nd.op_type in ("QuantizeLinear", "DequantizeLinear", "Identity"): pass
        else: raise ValueError(nd.op_type)
        t = nd.output[0]
branches = block["branches"]
chains = []
for b in branches:
    k = ifn.output[:].index(b["stages"][1])
    inner = thenb.output[k].name
    o = orig(inner)
    if isinstance(o, tuple):  # DQ copy of a main-graph DQ: find main DQ with same input
        q = o[1].input[0][2:] if o[1].input[0].startswith("x/") else o[1].input[0]
        o = next(nd.output[0] for nd in g.node if nd.op_type == "DequantizeLinear" and nd.input[0] == q)
    ops = stage_chain(o)
    quant = not any(op[0] == "relu" for op in ops)
    if quant:  # relu fused into quantizer: add after each conv
        ops2 = []
        for op in ops:
            ops2.append(op)
            if op[0] == "conv": ops2.append(("relu",))
        ops = ops2
    chains.append(ops)
print([[op[0] for op in c] for c in chains[:1]])
def run_chain(ops, x):
    for op in ops:
        if op[0] == "pool": x = F.max_pool2d(x, op[1], op[2])
        elif op[0] == "conv": x = F.conv2d(x, torch.from_numpy(op[1]), None if op[2] is None else torch.from_numpy(op[2]), padding=op[3][0])
        elif op[0] == "relu": x = F.relu(x)
        elif op[0] == "gap": x = x.mean((2, 3))
    return x

split = sys.argv[3] if len(sys.argv) > 3 else "PublicTest"
faces = load_fer2013("../shared/data/fer2013/fer2013.csv.xz", split).images[:n]
variants = ["gc4", "gc3", "gc2", "hires4", "hires3", "hires2", "gc34"]
allmaps = {v: np.zeros((len(faces), 48, 48), np.float32) for v in variants}
probs = net.predict(faces); targets = probs.argmax(1)
names = [x for b in branches for x in (b["stages"][1], b["stages"][2], b["stages"][3], b["grad"])]
fdcheck = []
for st in range(0, len(faces), 64):
    outs = _run_explain(net, faces[st: st + 64], names)
    t = targets[st: st + 64]; ii = np.arange(len(t))
    for j, b in enumerate(branches):
        a2, a3, a4, gr = outs[4 * j], outs[4 * j + 1], outs[4 * j + 2], outs[4 * j + 3]
        gsel = torch.from_numpy(gr[ii, t])  # (n,F) dlogit/dpooled
        x2 = torch.from_numpy(a2).requires_grad_(True)
        ops = chains[j]; cut = [k for k, op in enumerate(ops) if op[0] == "pool"][0]
        # chain from stage2: pool, conv, relu, conv, relu, [stage3], pool, ...
        k3 = [k for k, op in enumerate(ops) if op[0] == "pool"][1]
        h3 = run_chain(ops[:k3], x2); h3.retain_grad()
        f = run_chain(ops[k3:], h3)
        if st == 0:
            print("stage3 recompute err", float(np.abs(h3.detach().numpy() - a3).max()), float(np.abs(a3).max()))
        f.backward(gsel)
        g3 = h3.grad.numpy(); g2 = x2.grad.numpy()
        w4 = gr[ii, t] / (a4.shape[2] * a4.shape[3])
        w3 = g3.mean((2, 3))
        cams = {"gc4": np.einsum("nf,nfhw->nhw", w4, a4), "gc3": np.einsum("nf,nfhw->nhw", w3, a3),
                "hires3": (g3 * a3).sum(1), "hires4": None,
                "gc2": np.einsum("nf,nfhw->nhw", g2.mean((2, 3)), a2), "hires2": (g2 * a2).sum(1)}
        # true grad wrt a4 via maxpool routing: recompute from a4
        x4 = torch.from_numpy(a4).requires_grad_(True)
        f4 = F.max_pool2d(x4, 2, 2).mean((2, 3)); (g4,) = torch.autograd.grad(f4, x4, grad_outputs=gsel)
        cams["hires4"] = (g4.numpy() * a4).sum(1)
        for i in range(len(t)):
            c3 = _to_frame(cams["gc3"][i], net.crop, 48, b["flip"]); c4 = _to_frame(cams["gc4"][i], net.crop, 48, b["flip"])
            allmaps["gc3"][st + i] += c3; allmaps["gc4"][st + i] += c4
            allmaps["hires3"][st + i] += _to_frame(cams["hires3"][i], net.crop, 48, b["flip"])
            allmaps["gc2"][st + i] += _to_frame(cams["gc2"][i], net.crop, 48, b["flip"])
            allmaps["hires2"][st + i] += _to_frame(cams["hires2"][i], net.crop, 48, b["flip"])
            allmaps["hires4"][st + i] += _to_frame(cams["hires4"][i], net.crop, 48, b["flip"])
            s3, s4 = np.abs(c3).max() + 1e-9, np.abs(c4).max() + 1e-9
            allmaps["gc34"][st + i] += c3 / s3 + c4 / s4
res = {}
for v in variants:
    d = deletion_drops(net, faces, allmaps[v], probs, 0.2, "blur", seed=0)
    res[v] = (float(d["salient"].mean()), float(d["random"].mean()), float(d["salient"].mean() / d["random"].mean()))
    print(name, split, n, v, "salient %.3f random %.3f ratio %.2f" % res[v], flush=True)
json.dump(res, open(f"benchmarks/results/explain_cam_selection_{name}_{split}_{n}.json", "w"), indent=1)
