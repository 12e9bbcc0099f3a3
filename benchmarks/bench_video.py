"""End-to-end speed, face counts and memory of ``emolens video`` on the clips in ../shared/media/video.

For each clip (one_face_640x360.mp4, one_face_1280x720.mp4, multi_face.mp4) and each setting,
``emolens video CLIP --out TMP`` runs as its own process, and we record

* ``fps``: frames analysed / processing seconds, as the CLI measures it in its summary
  (decode + detect + track + classify + CSV (+ annotated video); model loading excluded),
* ``fps_process``: frames / wall seconds of the whole process (start-up and model loading included),
* faces per frame against the true count (1, 1, 4) and the share of frames with exactly that count,
* peak RSS of the process (``wait4``).

Memory: the 640x360 clip and the same clip looped 10x (re-encoded into a temp folder with
PyAV) are run with the same settings; peak RSS must stay flat.

Results: ``benchmarks/results/bench_video.json`` and ``.md`` (machine, date, command).
The incumbent ``fer`` numbers (2 cores, decode included) are from issue #8.

    python benchmarks/bench_video.py [--repeat 3] [--media ../shared/media]

``measure_emolens(path)`` is importable (e.g. by ``fer_side_by_side.py``).
"""

from __future__ import annotations

import argparse
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

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"
CLIPS = {"one_face_640x360.mp4": 1, "one_face_1280x720.mp4": 1, "multi_face.mp4": 4}
FER_FPS = {"one_face_640x360.mp4": 49.8, "one_face_1280x720.mp4": 19.2, "multi_face.mp4": 4.6}
SETTINGS: dict[str, list[str]] = {
    "default (detect every 2nd frame), no annotation": ["--no-annotate"],
    "default + annotated mp4": [],
    "detect every frame, no annotation": ["--no-annotate", "--detect-every", "1"],
}


def _run_process(cmd: list[str]) -> tuple[int, float, int, str]:
    """Run ``cmd``; return (exit code, wall seconds, peak RSS in MiB, stderr)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return proc.returncode, wall, usage.ru_maxrss // 1024, err.read().decode(errors="replace")


def measure_emolens(path: str | os.PathLike, args: list[str] | None = None, true_faces: int | None = None) -> dict:
    """Run ``emolens video PATH`` once in a fresh process and measure it.

    ``args``: extra CLI options (default ``["--no-annotate"]``). Returns ``{"fps",
    "fps_process", "wall_s", "frames", "faces_per_frame", "frames_with_true_count",
    "tracks", "peak_rss_mib", ...}``.
    """
    import csv
    from collections import Counter

    path = Path(path)
    args = ["--no-annotate"] if args is None else list(args)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "emolens.cli", "video", str(path), "--out", tmp, "--no-progress", *args]
        code, wall, rss, err = _run_process(cmd)
        if code != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {err.strip()[-500:]}")
        summary = json.loads((Path(tmp) / f"{path.stem}.summary.json").read_text())
        with open(Path(tmp) / f"{path.stem}.frames.csv", newline="") as fh:
            per_frame = Counter(int(r["frame"]) for r in csv.DictReader(fh))
    n = summary["frames_analysed"]
    counts = [per_frame.get(i, 0) for i in range(summary["frames_decoded"])] if n == summary["frames_decoded"] else []
    result = {
        "clip": path.name,
        "args": args,
        "frames": n,
        "fps": summary["processing_fps"],
        "fps_process": round(n / wall, 2),
        "wall_s": round(wall, 2),
        "faces_per_frame": round(summary["faces_found"] / max(n, 1), 3),
        "tracks": len(summary["tracks"]),
        "peak_rss_mib": rss,
    }
    if true_faces is not None and counts:
        result["true_faces"] = true_faces
        result["frames_with_true_count"] = round(sum(c == true_faces for c in counts) / len(counts), 3)
    return result


def make_looped(src: Path, dst: Path, times: int = 10) -> float:
    """Write ``src``'s video ``times`` times in a row into ``dst`` (H.264); returns its duration in s."""
    import av

    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        rate = stream.average_rate
        frames = [f.to_ndarray(format="yuv420p") for f in inp.decode(stream)]
        width, height = stream.codec_context.width, stream.codec_context.height
    with av.open(str(dst), "w") as out:
        enc = out.add_stream("libx264", rate=rate)
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.options = {"preset": "ultrafast", "crf": "26"}
        for _ in range(times):
            for array in frames:
                for packet in enc.encode(av.VideoFrame.from_ndarray(array, format="yuv420p")):
                    out.mux(packet)
        for packet in enc.encode():
            out.mux(packet)
    return len(frames) * times / float(rate)


def machine() -> dict:
    """CPU model, core count, load, Python and library versions."""
    import av
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "pyav": av.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
    }


def to_markdown(report: dict) -> str:
    """The report as a markdown table."""
    m = report["machine"]
    lines = [
        "# emolens video benchmark",
        "",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        f"- machine: {m['cpu']}, {m['cpu_count']} cores, load average {m['load_average_1min_at_start']} at start "
        f"(other jobs were running), Python {m['python']}, PyAV {m['pyav']}, onnxruntime {m['onnxruntime']}",
        f"- repeats: {report['repeat']} (median shown)",
        "- fps: frames / processing seconds from the CLI summary (decode+detect+track+classify+write, "
        "model load excluded); fps (process): frames / wall time of the whole `emolens video` process",
        "",
        "| clip | setting | fps | fps (process) | fer fps | fps / fer | faces/frame (true) | frames with true count "
        "| tracks | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["speed"]:
        fer = FER_FPS.get(r["clip"])
        ratio = f"{r['fps'] / fer:.1f}x" if fer else ""
        lines.append(
            f"| {r['clip']} | {r['setting']} | {r['fps']:.1f} | {r['fps_process']:.1f} | {fer} | {ratio} | "
            f"{r['faces_per_frame']} ({r.get('true_faces', '')}) | {r.get('frames_with_true_count', '')} | "
            f"{r['tracks']} | {r['peak_rss_mib']} |"
        )
    mem = report["memory"]
    lines += [
        "",
        "## Peak RSS: clip vs the same clip looped 10x",
        "",
        "| input | duration s | frames | setting | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for r in mem["runs"]:
        lines.append(f"| {r['input']} | {r['duration_s']:.1f} | {r['frames']} | {r['setting']} | {r['peak_rss_mib']} |")
    lines += ["", f"Ratio (10x / 1x), worst setting: {mem['worst_ratio']:.2f}", ""]
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and write JSON + markdown to benchmarks/results/."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", type=Path, default=MEDIA)
    ap.add_argument("--repeat", type=int, default=1, help="runs per clip and setting (median is reported)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_video")
    args = ap.parse_args()

    report: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "repeat": args.repeat,
        "fer_fps_from_issue": FER_FPS,
        "speed": [],
    }
    for clip, true in CLIPS.items():
        for setting, extra in SETTINGS.items():
            runs = [measure_emolens(args.media / "video" / clip, extra, true) for _ in range(args.repeat)]
            best = sorted(runs, key=lambda r: r["fps"])[len(runs) // 2]
            best = {**best, "setting": setting, "fps_runs": [r["fps"] for r in runs]}
            best["fps"] = statistics.median(r["fps"] for r in runs)
            report["speed"].append(best)
            print(json.dumps(best), flush=True)

    mem_runs = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.media / "video" / "one_face_640x360.mp4"
        looped = Path(tmp) / "one_face_640x360_x10.mp4"
        long_s = make_looped(clip, looped, 10)
        for setting, extra in [("no annotation", ["--no-annotate"]), ("annotated mp4", [])]:
            for name, path, dur in [(clip.name, clip, 5.0), (looped.name, looped, long_s)]:
                r = measure_emolens(path, extra)
                mem_runs.append({"input": name, "duration_s": dur, "frames": r["frames"], "setting": setting,
                                 "peak_rss_mib": r["peak_rss_mib"], "fps": r["fps"]})
                print(json.dumps(mem_runs[-1]), flush=True)
    ratios = [mem_runs[i + 1]["peak_rss_mib"] / mem_runs[i]["peak_rss_mib"] for i in range(0, len(mem_runs), 2)]
    report["memory"] = {"runs": mem_runs, "worst_ratio": round(max(ratios), 3)}
    report["machine"]["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
