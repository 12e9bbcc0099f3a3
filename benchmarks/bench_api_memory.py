"""Peak memory of the Python API on a long input: a 30-minute video against a 3-minute one.

The inputs are a real clip (``../shared/media/video/one_face_640x360.mp4``: one talking face,
5 s, H.264 640x360 29.97 fps) looped by stream copy (PyAV remux, video stream only, no
re-encoding) into a temp folder: 36 copies (3 min) and 360 copies (30 min). Each measurement runs
in a fresh Python process and reports its peak RSS (``ru_maxrss``) and its RSS at every tenth
of the analysed frames. Modes:

* ``sinks``: ``emolens.analyze_video(path, collect=False, sinks=[CSV, Parquet, timeline PNG,
  annotated MP4])``: the frame loop writing every file output as it goes, nothing kept per frame;
* ``stream``: ``for result in emolens.stream(path): ...`` (faces only, nothing written);
* ``collect``: ``emolens.analyze_video(path)``, the default, which keeps every row in memory as a
  DataFrame: its memory grows with the number of rows (reported, not part of the floor).

Faces only (``modality="face"``): the voice path decodes the whole sound track at once (16 kHz
float32, about 3.8 MB per minute), so it is not part of this flat-memory measurement.

Floor: in ``sinks`` and ``stream`` mode the 30-minute peak RSS is within 10 % of the 3-minute one.
Writes ``benchmarks/results/api_memory.json`` and ``api_memory.md``.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/bench_api_memory.py [--fps 2] [--short-min 3] [--long-min 30]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "media" / "video" / "one_face_640x360.mp4"
RESULTS = REPO / "benchmarks" / "results"
MODES = ("sinks", "stream", "collect")
FLOOR = 0.10  # 30-minute peak within 10 % of the 3-minute peak

#: Runs in a fresh process: argv = mode, video, out folder, fps. Prints one JSON line.
CHILD = r"""
import json, os, resource, sys, time
mode, video, out, fps = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
import emolens
from emolens.media import expected_frames
from emolens.sinks import AnnotatedVideoSink, CsvSink, ParquetSink, TimelineSink

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

samples = []
def on_frame(done, total):
    if total and (done * 10) // total != ((done - 1) * 10) // total:
        samples.append([done, round(rss_mib(), 1)])

start = time.perf_counter()
opts = dict(fps=fps, modality="face", threads=1, detect_every=1, classify_every=1)
if mode == "sinks":
    stem = os.path.join(out, "long")
    sinks = [CsvSink(stem + ".frames.csv"), ParquetSink(stem + ".frames.parquet"),
             TimelineSink(stem + ".timeline.png"), AnnotatedVideoSink(stem + ".annotated.mp4")]
    r = emolens.analyze_video(video, collect=False, sinks=sinks, on_frame=on_frame, **opts)
    frames, rows = r.summary["frames_analysed"], r.summary["faces_found"]
elif mode == "collect":
    r = emolens.analyze_video(video, on_frame=on_frame, **opts)
    frames, rows = r.summary["frames_analysed"], len(r.frames)
else:
    frames = rows = 0
    with emolens.stream(video, **opts) as s:
        total = expected_frames(s.info, 1, fps)
        for result in s:
            frames += 1
            rows += len(result.faces)
            on_frame(frames, total)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_rss_mib": round(peak, 1), "frames": frames, "rows": rows,
                  "seconds": round(time.perf_counter() - start, 1), "rss_every_tenth": samples}))
"""


def loop_clip(src: Path, dst: Path, copies: int) -> float:
    """Write ``copies`` back-to-back copies of ``src``'s video stream to ``dst`` (stream copy);
    returns the duration in seconds."""
    import av

    with av.open(str(src)) as probe:
        base = probe.streams.video[0].time_base
        step = int(round(probe.duration / 1e6 / base)) if probe.duration else 0
    with av.open(str(dst), "w") as out:
        ostream = None
        offset = 0
        for _ in range(copies):
            with av.open(str(src)) as inp:
                vstream = inp.streams.video[0]
                if ostream is None:
                    ostream = out.add_stream_from_template(vstream)
                last = 0
                for packet in inp.demux(vstream):
                    if packet.dts is None:
                        continue
                    last = max(last, int(packet.pts or 0) + int(packet.duration or 0))
                    packet.pts = None if packet.pts is None else packet.pts + offset
                    packet.dts += offset
                    packet.stream = ostream
                    out.mux(packet)
                offset += max(step, last)
    return float(offset * base)


def measure(mode: str, video: Path, fps: float, tmp: Path) -> dict:
    out = tmp / f"out-{mode}-{video.stem}"
    out.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(video), str(out), str(fps)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} on {video.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fps", type=float, default=2.0, help="analysed frames per second (--fps of the API)")
    ap.add_argument("--short-min", type=float, default=3.0)
    ap.add_argument("--long-min", type=float, default=30.0)
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args()
    if not CLIP.is_file():
        sys.exit(f"needs {CLIP} (the ../shared folder next to the repo)")
    modes = [m for m in args.modes.split(",") if m]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="emolens-api-mem-") as folder:
        tmp = Path(folder)
        inputs = {}
        for name, minutes in (("short", args.short_min), ("long", args.long_min)):
            path = tmp / f"{name}.mp4"
            seconds = loop_clip(CLIP, path, max(1, round(minutes * 60 / 5.005)))
            inputs[name] = {"minutes": round(seconds / 60, 2), "bytes": path.stat().st_size, "path": path}
            print(f"{name}: {seconds / 60:.2f} min, {path.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
        for mode in modes:
            results[mode] = {}
            for name in ("short", "long"):
                t = time.perf_counter()
                results[mode][name] = r = measure(mode, inputs[name]["path"], args.fps, tmp)
                print(f"{mode:8s} {name:5s}: peak {r['peak_rss_mib']:.1f} MiB, {r['frames']} frames, "
                      f"{r['rows']} rows, {time.perf_counter() - t:.0f} s", file=sys.stderr)
            short, long = results[mode]["short"]["peak_rss_mib"], results[mode]["long"]["peak_rss_mib"]
            results[mode]["growth"] = round(long / short - 1, 4)
            results[mode]["within_floor"] = abs(long / short - 1) <= FLOOR
    for v in inputs.values():
        v.pop("path")
    record = {
        "benchmark": "bench_api_memory",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "command": "nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/bench_api_memory.py "
                   f"--fps {args.fps:g} --short-min {args.short_min:g} --long-min {args.long_min:g} "
                   f"--modes {','.join(modes)}",
        "settings": {"clip": str(CLIP.relative_to(REPO.parent)), "fps": args.fps, "modality": "face", "threads": 1,
                     "detect_every": 1, "classify_every": 1,
                     "inputs": inputs, "floor": f"long peak RSS within {FLOOR:.0%} of short (sinks, stream)"},
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "api_memory.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "api_memory.md").write_text(report(record))
    print(report(record))


def report(r: dict) -> str:
    s, inp = r["settings"], r["settings"]["inputs"]
    lines = [
        "# Python API: peak memory on a long input",
        "",
        f"- Date: {r['date']}; machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, "
        f"Python {r['machine']['python']}",
        f"- Command: `{r['command']}`",
        f"- Input: `{s['clip']}` looped by stream copy to {inp['short']['minutes']} min and "
        f"{inp['long']['minutes']} min (video only); analysed at {s['fps']:g} frames/s (detection and "
        "classification on every analysed frame), modality face, 1 thread; "
        "every run in a fresh process, peak RSS = `ru_maxrss`.",
        "",
        "| mode | what runs | peak RSS short (MiB) | peak RSS long (MiB) | growth | frames (short / long) | "
        "seconds (short / long) |",
        "|---|---|---|---|---|---|---|",
    ]
    what = {"sinks": "`analyze_video(collect=False, sinks=[csv, parquet, png, mp4])`",
            "stream": "`for r in emolens.stream(...)`",
            "collect": "`analyze_video(...)` (rows kept as a DataFrame)"}
    for mode, m in r["results"].items():
        a, b = m["short"], m["long"]
        lines.append(f"| {mode} | {what[mode]} | {a['peak_rss_mib']:.1f} | {b['peak_rss_mib']:.1f} | "
                     f"{m['growth']:+.1%} | {a['frames']} / {b['frames']} | {a['seconds']} / {b['seconds']} |")
    lines += ["", f"Floor: {s['floor']}: " + ", ".join(
        f"{mode} {'met' if m['within_floor'] else 'NOT met'}" for mode, m in r["results"].items()
        if mode != "collect") + ".", "",
        "RSS at every tenth of the long run's frames (frames, MiB):", ""]
    for mode, m in r["results"].items():
        lines.append(f"- {mode}: " + ", ".join(f"{n}: {v}" for n, v in m["long"]["rss_every_tenth"]))
    lines += ["", "`collect` keeps one row per face and frame in memory (the DataFrame of `VideoResult.frames`); "
              "for long inputs use sinks (`collect=False`) or `emolens.stream`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
