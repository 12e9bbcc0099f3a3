"""Export Resemblyzer's GE2E speaker encoder to ``models/speech_encoder.onnx`` (done once; torch).

The weights come from the Resemblyzer wheel (Apache-2.0; ``resemblyzer/pretrained.pt`` inside
it, 17 MB). Install it without its dependencies (``pip install --no-deps resemblyzer``) or unpack
the wheel, then::

    python -m emolens.train.speech_encoder [PRETRAINED_PT] [OUT_ONNX]

Graph: ``mel`` float32 ``(N, T, 40)`` -> 3-layer LSTM (256) -> last hidden state of the top layer
-> Linear 256 -> ReLU -> L2 normalisation -> ``embedding`` ``(N, 256)``, as Resemblyzer's
``VoiceEncoder.forward``; second output ``states`` ``(N, 512)``: the mean and standard deviation
over time of the top layer's output at every frame. Weights are stored as float16 (computed in
float32).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from emolens.voice.encoder import DEFAULT_ENCODER


class GE2E(torch.nn.Module):
    """Resemblyzer's ``VoiceEncoder`` network."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = torch.nn.Linear(256, 256)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames, (hidden, _) = self.lstm(mel)
        e = torch.relu(self.linear(hidden[-1]))
        mean = frames.mean(1)
        std = ((frames - mean[:, None]) ** 2).mean(1).sqrt()
        return e / torch.linalg.vector_norm(e, dim=1, keepdim=True).clamp_min(1e-9), torch.cat([mean, std], 1)


def default_pretrained() -> Path:
    """``pretrained.pt`` of an installed Resemblyzer package."""
    import importlib.util

    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("resemblyzer is not installed: pip install --no-deps resemblyzer, or pass the path "
                         "of pretrained.pt from its wheel")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


def load_ge2e(pretrained: str | Path | None = None) -> GE2E:
    """The GE2E network with Resemblyzer's weights (``pretrained.pt``; default: the installed wheel's)."""
    state = torch.load(str(pretrained or default_pretrained()), map_location="cpu")
    state = state.get("model_state", state)
    net = GE2E()
    net.load_state_dict({k: v for k, v in state.items() if k.split(".")[0] in ("lstm", "linear")})
    return net.eval()


def export(pretrained: str | Path, out: str | Path = DEFAULT_ENCODER) -> Path:
    """Load the GE2E weights, export ONNX (float16-stored weights) and check it against torch."""
    from emolens.train.onnx_weights import store_fp16

    net = load_ge2e(pretrained)
    out = Path(out)
    dummy = torch.rand(2, 160, 40)
    torch.onnx.export(net, (dummy,), str(out), input_names=["mel"], output_names=["embedding", "states"],
                      dynamic_axes={"mel": {0: "n", 1: "t"}, "embedding": {0: "n"}, "states": {0: "n"}},
                      opset_version=17, dynamo=False)
    store_fp16(out)
    import onnxruntime as ort

    x = np.random.default_rng(0).random((3, 250, 40)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"mel": x})
    with torch.no_grad():
        want = [w.numpy() for w in net(torch.from_numpy(x))]
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    print(f"{out}: {out.stat().st_size} bytes, max |onnx - torch| = {err:.2e}")
    if err > 2e-2:
        raise SystemExit("exported encoder differs from torch")
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    export(args[0] if args else default_pretrained(), args[1] if len(args) > 1 else DEFAULT_ENCODER)
