"""Does the normal path pay for the explain outputs? faces/s of each shipped face model against the
same model with the explain outputs removed (:func:`emolens.train.face_explain_export.remove_explain_outputs`),
measured alternately on the same batch of PrivateTest faces; probabilities must be identical.

    OMP_NUM_THREADS=1 python benchmarks/bench_explain_overhead.py [--model default accurate] [--rounds 6]

Needs ``onnx`` (train extra). Writes ``benchmarks/results/explain_overhead.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FER = REPO.parent / "shared" / "data" / "fer2013" / "fer2013.csv.xz"
RESULTS = REPO / "benchmarks" / "results"


def rate(model: object, batch: np.ndarray, seconds: float) -> float:
    """faces/s of ``model.predict`` on ``batch`` over about ``seconds``."""
    model.predict(batch)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.predict(batch)
        n += len(batch)
    return n / (time.perf_counter() - t0)


def main() -> None:
    """Measure and write the results."""
    import onnxruntime

    from emolens.datasets import load_fer2013
    from emolens.expression import ExpressionModel, available_models
    from emolens.train.face_explain_export import remove_explain_outputs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", default=["default", "accurate"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    faces = load_fer2013(FER, "PrivateTest").images
    batch = faces[:64]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.model:
            plain = Path(tmp) / f"{name}.plain.onnx"
            remove_explain_outputs(available_models()[name], plain)
            shipped = ExpressionModel(name, threads=args.threads)
            stripped = ExpressionModel(plain, threads=args.threads)
            same = bool(np.array_equal(shipped.predict(faces[:512]), stripped.predict(faces[:512])))
            speeds: dict[str, list[float]] = {"without": [], "with": []}
            for _ in range(args.rounds):  # alternate, so load changes hit both alike
                speeds["without"].append(rate(stripped, batch, args.seconds))
                speeds["with"].append(rate(shipped, batch, args.seconds))
            med = {k: float(np.median(v)) for k, v in speeds.items()}
            rows.append({"model": name, "identical_probs": same, "faces_per_s_without": med["without"],
                         "faces_per_s_with": med["with"], "ratio": med["with"] / med["without"],
                         "rounds": {k: [round(x, 1) for x in v] for k, v in speeds.items()}})
            print(rows[-1], file=sys.stderr)
    machine = (f"{cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end (shared "
               f"machine), Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
               f"{args.threads} thread(s), batches of 64")
    command = "OMP_NUM_THREADS=1 python benchmarks/bench_explain_overhead.py " + " ".join(sys.argv[1:])
    lines = ["# Explain outputs: cost on the normal path", "", f"- date: {datetime.date.today().isoformat()}",
             f"- machine: {machine}", f"- command: `{command.strip()}`", "",
             "| model | identical probabilities | faces/s without explain outputs | faces/s as shipped | ratio |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['identical_probs']} | {r['faces_per_s_without']:.0f} | "
              f"{r['faces_per_s_with']:.0f} | {r['ratio']:.2f} |" for r in rows]
    lines += ["", f"Medians of {args.rounds} alternating rounds of {args.seconds:g} s each. The explain outputs sit "
              "behind an `If` on the boolean input `explain` (default false), so the normal path runs the "
              "unchanged graph plus one `If` that returns empty tensors."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "explain_overhead.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "explain_overhead.json").write_text(json.dumps({"date": datetime.date.today().isoformat(),
                                                               "machine": machine, "command": command,
                                                               "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
