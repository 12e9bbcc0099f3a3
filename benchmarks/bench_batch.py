"""Throughput of ``emolens batch``: one process vs the local process pool vs Ray.

Inputs: ``--copies`` symlinks (default 8) in a temp folder, cycling over the real clips
``video/one_face_640x360.mp4``, ``video/one_face_1280x720.mp4``, ``video/one_face_stage_640x360.mp4``
and ``video/multi_face.mp4`` from ../shared/media (``--clips`` to choose others). Every setting
writes the same outputs with the default ``emolens batch`` settings (every frame, voice fused
in, frames CSV, summary JSON, annotated MP4, Parquet dataset), each into a fresh folder:

* (a) ``sequential``: the inputs one after another in one process (one set of models reused,
  ``threads`` = all cores), run as ``python bench_batch.py --sequential OUT INPUT...``;
* (b) ``local``: ``emolens batch DIR --out OUT --engine local --workers 2``;
* (c) ``ray``: ``emolens batch DIR --out OUT --engine ray --address 127.0.0.1:PORT --workers 2``
  against a Ray head this script starts on 127.0.0.1 with 2 CPUs (``ray start --head --block``
  in its own session; stopped by ending that session's processes, so no other Ray is touched).

Each setting is timed as the wall time of its whole command (interpreter start, model loading,
worker start-up included; the Ray head's start is not). Throughput = inputs / second and
analysed frames / second. Floors: (b) >= 1.7x (a), (c) >= 0.85x (b).

    python benchmarks/bench_batch.py [--copies 8] [--repeat 1] [--results benchmarks/results]

Writes ``RESULTS/batch.json`` and ``RESULTS/batch.md`` (machine, date, command, settings).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emolens.batch.ray_head import local_ray_head

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"
CLIPS = ["video/one_face_640x360.mp4", "video/one_face_1280x720.mp4", "video/one_face_stage_640x360.mp4",
         "video/multi_face.mp4"]
WORKERS = 2
FLOOR_LOCAL, FLOOR_RAY = 1.7, 0.85


def sequential(out: Path, inputs: list[str]) -> None:
    """(a): every input in this process, one BatchWorker (models loaded once, all cores' threads)."""
    from emolens.batch import BatchSettings, BatchWorker, Manifest, plan_jobs

    worker = BatchWorker(BatchSettings(threads=os.cpu_count() or 1), out)
    manifest = Manifest(out)
    for job in plan_jobs(inputs):
        result = worker.run(job)
        manifest.record(result)
        if result.status != "ok":
            raise SystemExit(f"{job.input}: {result.error}")


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall


def _frames(out: Path) -> int:
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["status"] == "ok" for r in rows), rows
    return sum(int(r["frames"]) for r in rows)


def _input_seconds(out: Path) -> float:
    """Sum of the manifest's per-input times: the work itself, without process start-up (a worker's
    first input includes loading its models)."""
    with open(out / "manifest.csv", newline="") as f:
        return sum(float(r["seconds"]) for r in csv.DictReader(f))


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("onnxruntime", "av", "ray", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=8, help="number of inputs (symlinks cycling over --clips)")
    parser.add_argument("--clips", nargs="+", default=CLIPS, help="clips, relative to --media")
    parser.add_argument("--media", type=Path, default=MEDIA)
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting (median reported)")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--sequential", nargs="+", metavar=("OUT", "INPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sequential:
        sequential(Path(args.sequential[0]), args.sequential[1:])
        return
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _common import cpu_name

    clips = [args.media / c for c in args.clips]
    missing = [str(c) for c in clips if not c.is_file()]
    if missing:
        raise SystemExit(f"missing clips: {', '.join(missing)} (the ../shared/media folder)")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="emolens-bench-batch-") as tmp:
        root = Path(tmp)
        folder = root / "inputs"
        folder.mkdir()
        inputs = []
        for i in range(args.copies):
            clip = clips[i % len(clips)]
            link = folder / f"{i:02d}_{clip.name}"
            link.symlink_to(clip)
            inputs.append(str(link))
        batch = [sys.executable, "-m", "emolens.cli", "batch", str(folder), "--no-progress"]
        runs: dict[str, list[dict]] = {"sequential": [], "local": [], "ray": []}
        commands = {
            "sequential": f"python benchmarks/bench_batch.py --sequential OUT {args.copies} inputs",
            "local": f"emolens batch INPUTS --out OUT --engine local --workers {WORKERS}",
            "ray": f"emolens batch INPUTS --out OUT --engine ray --address 127.0.0.1:PORT --workers {WORKERS}",
        }
        for r in range(args.repeat):
            out = root / f"seq{r}"
            wall = _timed([sys.executable, __file__, "--sequential", str(out), *inputs])
            runs["sequential"].append({"seconds": wall, "frames": _frames(out), "work": _input_seconds(out)})
            out = root / f"local{r}"
            wall = _timed([*batch, "--out", str(out), "--engine", "local", "--workers", str(WORKERS)])
            runs["local"].append({"seconds": wall, "frames": _frames(out), "work": _input_seconds(out)})
            print(f"repeat {r + 1}: sequential {runs['sequential'][-1]['seconds']:.1f} s, "
                  f"local {runs['local'][-1]['seconds']:.1f} s", file=sys.stderr)
        with local_ray_head(WORKERS, root / "ray-head.log") as address:
            for r in range(args.repeat):
                out = root / f"ray{r}"
                wall = _timed([*batch, "--out", str(out), "--engine", "ray", "--address", address,
                               "--workers", str(WORKERS)])
                runs["ray"].append({"seconds": wall, "frames": _frames(out), "work": _input_seconds(out)})
                print(f"repeat {r + 1}: ray {wall:.1f} s", file=sys.stderr)
    settings = {}
    for name, rs in runs.items():
        seconds = statistics.median(x["seconds"] for x in rs)
        frames = rs[0]["frames"]
        settings[name] = {"command": commands[name], "seconds": round(seconds, 2),
                          "all_seconds": [round(x["seconds"], 2) for x in rs], "frames": frames,
                          "inputs_per_s": round(args.copies / seconds, 3), "frames_per_s": round(frames / seconds, 1),
                          "input_seconds_sum": round(statistics.median(x["work"] for x in rs), 2)}
    local_vs_seq = settings["local"]["inputs_per_s"] / settings["sequential"]["inputs_per_s"]
    ray_vs_local = settings["ray"]["inputs_per_s"] / settings["local"]["inputs_per_s"]
    # The best local can do: the sequential run's wall time over half the workers' summed per-input time
    # (1 thread each), i.e. perfect balance and no start-up at all.
    ceiling = settings["sequential"]["seconds"] / (settings["local"]["input_seconds_sum"] / WORKERS)
    result = {
        "ceiling_local_vs_sequential": round(ceiling, 3),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_batch.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in
                                                                                          load_before],
                    "platform": platform.platform(), **_versions()},
        "inputs": {"copies": args.copies, "clips": args.clips, "workers": WORKERS, "repeat": args.repeat,
                   "settings": "emolens batch defaults: every frame, detect/classify every 2nd, voice fused in, "
                               "annotated MP4, frames CSV + summary JSON + Parquet dataset"},
        "settings": settings,
        "ratios": {"local_vs_sequential": round(local_vs_seq, 3), "ray_vs_local": round(ray_vs_local, 3)},
        "floors": {"local_vs_sequential": FLOOR_LOCAL, "ray_vs_local": FLOOR_RAY,
                   "local_ok": local_vs_seq >= FLOOR_LOCAL, "ray_ok": ray_vs_local >= FLOOR_RAY},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "batch.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        "# emolens batch benchmark", "",
        f"- date: {result['date']}",
        f"- command: `{result['command']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores, load average {m['load_average_at_start'][0]} at start, "
        f"Python {m['python']}, onnxruntime {m['onnxruntime']}, PyAV {m['av']}, Ray {m['ray']}, "
        f"pyarrow {m['pyarrow']}",
        f"- inputs: {args.copies} symlinks cycling over {', '.join(args.clips)} (../shared/media)",
        f"- settings: {result['inputs']['settings']}; {WORKERS} workers; each setting writes into a fresh folder",
        "- seconds: wall time of the whole command (start-up and model loading included; the Ray head's "
        f"start excluded); median of {args.repeat}", "",
        "- per-input seconds: the manifest's `seconds` summed over the inputs (each worker's first input "
        "includes loading its models)", "",
        "| setting | command | seconds | inputs/s | frames/s | per-input seconds, summed |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in settings.items():
        lines.append(f"| {name} | `{s['command']}` | {s['seconds']} | {s['inputs_per_s']} | {s['frames_per_s']} | "
                     f"{s['input_seconds_sum']} |")
    lines += ["",
              f"- local vs sequential: {local_vs_seq:.2f}x (floor {FLOOR_LOCAL}x: "
              f"{'met' if local_vs_seq >= FLOOR_LOCAL else 'NOT met'})",
              f"- upper bound for local vs sequential on this machine: {ceiling:.2f}x (the sequential wall time over "
              f"the local workers' summed per-input time / {WORKERS}: perfect balance, no start-up; one thread per "
              "worker does less per second than one process using every core's thread)",
              f"- ray vs local: {ray_vs_local:.2f}x (floor {FLOOR_RAY}x, i.e. within 15%: "
              f"{'met' if ray_vs_local >= FLOOR_RAY else 'NOT met'})", ""]
    (args.results / "batch.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
