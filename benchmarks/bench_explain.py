"""Faithfulness of the heat maps: a deletion test on all of FER2013 PrivateTest (3,589 faces).

For each face and heat-map method (occlusion, Grad-CAM), the predicted class's probability drop
when the 20% most salient pixels of the network's input window are removed, against removing as
many random pixels: ``random blobs`` (top of a random map with the occlusion maps' blob structure)
and ``random pixels`` (scattered single pixels). Two removal operators, the same for salient and
random pixels: ``blur`` (pixels taken from a Gaussian-blurred copy of the face, sigma 4 px: the
criterion) and ``grey`` (mid grey). See :func:`emolens.explanations.deletion_drops`.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_explain.py [--model default accurate]
        [--method occlusion gradcam] [--limit N] [--card]

Writes ``benchmarks/results/explain_faithfulness.md`` (date, machine, command, figures) and ``.json``;
``--card`` also writes the table into the model cards (``src/emolens/models/face_<name>.md``).

``--chunks FILE`` keeps the sums of each finished 256-face chunk in FILE, so a run of hours (the
accurate model's occlusion maps: about 5 CPU-hours) can stop and resume. A rerun with the committed
``benchmarks/results/explain_chunks.json`` only reassembles the stored sums; to recompute from the
faces, give a new file or leave ``--chunks`` out. Chunks are stored per model file (the first 12
hex digits of its sha256), so a model whose weights change starts afresh; every row records it.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FER = REPO.parent / "shared" / "data" / "fer2013" / "fer2013.csv.xz"
RESULTS = REPO / "benchmarks" / "results"
FLOOR = 2.0


def table(rows: list[dict]) -> list[str]:
    """Markdown table of the result rows."""
    lines = ["| model | method | removal | faces | drop, salient 20% | drop, random blobs | ratio | "
             "drop, random pixels | ratio | floor 2x (blobs) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['model']} | {r['method']} | {r['operator']} | {r['faces']} | {r['drop_salient']:.3f} | "
              f"{r['drop_random']:.3f} | **{r['ratio_random']:.2f}** | {r['drop_pixels']:.3f} | "
              f"{r['ratio_pixels']:.2f} | {'pass' if r['ratio_random'] >= FLOOR else 'FAIL'} |" for r in rows]
    return lines


_NETS: dict = {}


def chunk_drops(name: str, method: str, chunk: np.ndarray, seed: int, fraction: float) -> dict:
    """Deletion drops of one chunk of faces, per removal operator (the model is loaded once per process)."""
    from emolens.explanations import OPERATORS, deletion_drops, saliency_maps
    from emolens.expression import ExpressionModel

    net = _NETS.setdefault(name, ExpressionModel(name, threads=1))
    maps, probs = saliency_maps(net, chunk, method)
    # same seed: the same random masks for both operators
    return {op: deletion_drops(net, chunk, maps, probs, fraction, op, seed=seed) for op in OPERATORS}


def chunk_store(path: Path | None) -> dict:
    """Finished chunks: ``{model/method/split/fraction: {start: {operator: {kind: [sum, count]}}}}``."""
    return json.loads(path.read_text()) if path and path.is_file() else {}


def save_chunk(path: Path, key: str, start: str, sums: dict) -> None:
    """Add one finished chunk to the store (written atomically)."""
    store = chunk_store(path)
    store.setdefault(key, {})[start] = sums
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(store, indent=1, sort_keys=True))
    tmp.replace(path)


def main() -> None:
    """Run the deletion test and write the results."""
    from concurrent.futures import ProcessPoolExecutor

    import onnxruntime

    from emolens.datasets import load_fer2013
    from emolens.explanations import BLUR_SIGMA, OPERATORS
    from emolens.expression import resolve_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=FER)
    ap.add_argument("--model", nargs="+", default=["default"])
    ap.add_argument("--method", nargs="+", default=["occlusion", "gradcam"], choices=["occlusion", "gradcam"])
    ap.add_argument("--limit", type=int, default=None, help="Only the first N faces.")
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--out", type=Path, default=RESULTS / "explain_faithfulness.md")
    ap.add_argument("--card", action="store_true", help="write the table into the model cards too")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (1 thread each); same results")
    ap.add_argument("--split", default="PrivateTest", help="FER2013 split (PublicTest: for choosing settings)")
    ap.add_argument("--chunks", type=Path, default=None,
                    help="JSON file of finished 256-face chunks (sums and counts): a rerun skips them, so a run "
                         "of hours can stop and resume (commit the file to resume in a fresh checkout)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the rows of other models/methods already in the results json (their own dates)")
    args = ap.parse_args()

    faces = load_fer2013(args.data, args.split).images[: args.limit]
    rows = []
    pool = ProcessPoolExecutor(args.jobs)
    for name in args.model:
        sha = hashlib.sha256(resolve_model(name).read_bytes()).hexdigest()[:12]
        for method in args.method:
            start = time.perf_counter()
            drops: dict[str, dict[str, list[np.ndarray]]] = {op: {} for op in OPERATORS}
            key = f"{name}@{sha}/{method}/{args.split}/{args.fraction}"
            stored = chunk_store(args.chunks).get(key, {})
            ids = {i: f"{i}+{len(faces[i: i + 256])}" for i in range(0, len(faces), 256)}  # start+size
            starts = [i for i, c in ids.items() if c not in stored]
            futures = [pool.submit(chunk_drops, name, method, faces[i: i + 256], i, args.fraction) for i in starts]
            for i, future in zip(starts, futures):  # in order: the same results for any --jobs
                stored[ids[i]] = {op: {k: [float(v.sum()), len(v)] for k, v in found.items()}
                                  for op, found in future.result().items()}
                if args.chunks:
                    save_chunk(args.chunks, key, ids[i], stored[ids[i]])
                print(f"{name} {method}: chunk at {i} done ({sum(c in stored for c in ids.values())} of {len(ids)})",
                      file=sys.stderr, flush=True)
            for c in ids.values():
                for op, found in stored[c].items():
                    for k, (total, n) in found.items():
                        drops[op].setdefault(k, []).append(np.array([total, n]))
            seconds = round(time.perf_counter() - start, 1)
            for op in OPERATORS:
                mean = {k: float(sum(t for t, _ in v) / sum(n for _, n in v)) for k, v in drops[op].items()}
                rows.append({"model": name, "model_sha256": sha, "method": method, "operator": op, "faces": len(faces),
                             "date": datetime.date.today().isoformat(),
                             "seconds": seconds, "drop_salient": mean["salient"], "drop_random": mean["random"],
                             "drop_pixels": mean["pixels"], "ratio_random": mean["salient"] / mean["random"],
                             "ratio_pixels": mean["salient"] / mean["pixels"]})
    pool.shutdown()
    load = os.getloadavg()[0]
    machine = (f"{cpu_name()}, {os.cpu_count()} cores, load average {load:.2f} at the end (shared machine), "
               f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
               f"{args.jobs} process(es) of 1 thread")
    command = "OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_explain.py " + " ".join(sys.argv[1:])
    if args.keep and args.out.with_suffix(".json").is_file():
        old = json.loads(args.out.with_suffix(".json").read_text())
        done = {(r["model"], r["method"]) for r in rows}
        kept = [{**r, "date": r.get("date", old["date"]), "command": r.get("command", old["command"])}
                for r in old["rows"] if (r["model"], r["method"]) not in done]
        rows = kept + [{**r, "command": command} for r in rows]
        rows.sort(key=lambda r: (r["model"], r["method"] != "occlusion"))
    notes = [
        f"Drops are mean probability drops of the predicted class when the {args.fraction:.0%} highest-scoring "
        "pixels of the network's 44x44 input window are removed. Removal: *blur* replaces them with the same "
        f"pixels of a Gaussian-blurred copy of the face (sigma {BLUR_SIGMA:g} px of 48; the operator used for the "
        "2x floor), *grey* with mid grey (128). *random blobs*: the top of a random map built like an occlusion "
        "map (random scores of 8x8 patches, stride 4), the baseline used for the 2x floor. *random pixels*: "
        "scattered single pixels, a noise-like perturbation that by itself hurts the network a lot (most with "
        "grey); against it no method reaches 2x.",
        "Methods: *occlusion*: 8x8 grey patches, stride 4 (121 positions), drop of the predicted class; "
        "*gradcam*: Grad-CAM in its HiResCAM form (activations times the gradient of the predicted class's logit, "
        "element-wise, summed over channels) on conv stage 2 of 4 (22x22, resized bilinearly over the 44x44 input "
        "window), no final ReLU, averaged over an ensemble's networks and mirrored views. Stage and form were "
        "chosen on FER2013 PublicTest, not on this split.",
    ]
    if args.keep:
        notes.append("Rows run at different times: " + "; ".join(sorted({
            f"{r['model']} {r['method']}"
            + (f" (model file sha256 {r['model_sha256']}...)" if r.get("model_sha256") else "")
            + f": {r['date']}, `{r['command']}`" for r in rows})) + ".")
    lines = [f"# Heat maps: deletion test on FER2013 {args.split}", "",
             f"- date: {datetime.date.today().isoformat()}", f"- machine: {machine}",
             f"- command: `{command.strip()}`", "", *table(rows), "", *notes]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"date": datetime.date.today().isoformat(),
                                                          "machine": machine, "command": command,
                                                          "blur_sigma": BLUR_SIGMA, "rows": rows}, indent=2))
    print("\n".join(lines))
    if args.card:
        from emolens.cards import write_card_section

        out = args.out.resolve()
        results_name = out.relative_to(REPO).as_posix() if out.is_relative_to(REPO) else str(args.out)
        for name in args.model:
            mine = [r for r in rows if r["model"] == name]
            text = ("## Heat maps: faithfulness (deletion test)\n\n"
                    f"Reproduce: `{command.strip()}` ({datetime.date.today().isoformat()}; "
                    f"`{results_name}`).\n\n" + "\n".join([*table(mine), "", *notes]))
            write_card_section(name, "faithfulness", text)


if __name__ == "__main__":
    main()
