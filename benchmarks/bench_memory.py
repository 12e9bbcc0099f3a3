"""Memory on long work: the face detector over many calls, and ``emolens video`` on a long
synthetic video against a short one; plus the detector's face counts and speed on the photos.

Two ways of calling YuNet are compared (same network, same weights, from the ``yuface`` wheel):

* ``direct``: what :class:`emolens.faces.YuNetDetector` does, libfacedetection's C entry point
  through ctypes with a result buffer we own;
* ``binding``: ``yuface.detect``, whose binding mallocs a 36,864-byte result buffer per call and
  never frees it (forced here by leaving the direct entry point unset).

Parts (each in its own process, so one part's memory never counts in another's):

1. RSS of the detector alone over ``--calls`` calls on a 64x64 image, checkpoints every 10%;
2. ms per call on a 64x64 image and a 640x360 frame (alternating blocks), faces found per photo
   in ``--media``/photos with both calls, and ms per photo (median of 5);
3. peak RSS (``wait4``) of ``emolens video --modality face --no-annotate`` on a synthetic 64x64
   face video of ``--short-min`` and ``--long-min`` minutes at ``--fps`` (encoded with PyAV into
   a temp folder), with both calls;
4. crafted bombs (JPEG/PNG headers declaring 30000^2 and 65500^2 pixels, a 16000x16000 H.264
   video) against a server on 127.0.0.1: answer, seconds and peak RSS growth per probe.

Writes ``benchmarks/results/bench_memory.json`` and appends nothing else; the figures are quoted
in ``benchmarks/results/hardening_media.md``.

    python benchmarks/bench_memory.py [--calls 50000] [--short-min 5] [--long-min 60] [--fps 15]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"
SAMPLE = REPO / "examples" / "astronaut.jpg"
OUT = REPO / "benchmarks" / "results" / "bench_memory.json"
MB = 1024 * 1024

#: Runs the CLI with the leaking binding (the direct entry point left unset before first use).
BINDING_CLI = ("import sys, emolens.faces as f; f._NATIVE['fn'] = None; sys.argv = ['emolens', *sys.argv[1:]]; "
               "from emolens.cli import main; main()")


def rss_mib() -> float:
    """Resident memory of this process now, MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def use_binding() -> None:
    """Make :class:`~emolens.faces.YuNetDetector` call ``yuface.detect`` (the leaking binding)."""
    import emolens.faces as faces

    faces._NATIVE["fn"] = None


# ------------------------------------------------------------------------------------- part 1


def detector_child(mode: str, calls: int) -> dict:
    """RSS checkpoints of ``calls`` detector calls on a 64x64 image (run in a child process)."""
    import numpy as np

    if mode == "binding":
        use_binding()
    from emolens.faces import YuNetDetector

    detector = YuNetDetector()
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for _ in range(300):
        detector.detect(image)
    points = [(0, round(rss_mib(), 1))]
    step = max(1, calls // 10)
    t0 = time.perf_counter()
    for i in range(1, calls + 1):
        detector.detect(image)
        if i % step == 0 or i == calls:
            points.append((i, round(rss_mib(), 1)))
    elapsed = time.perf_counter() - t0
    growth = points[-1][1] - points[0][1]
    return {"mode": mode, "calls": calls, "rss_mib": points, "growth_mib": round(growth, 1),
            "kib_per_call": round(growth * 1024 / calls, 2), "ms_per_call": round(1000 * elapsed / calls, 3)}


# ------------------------------------------------------------------------------------- part 2


def photos_child(media: Path) -> list[dict]:
    """Faces per photo and ms per photo with both calls (same process, alternating)."""
    import cv2

    import emolens.faces as faces
    from emolens.faces import YuNetDetector

    detector = YuNetDetector()
    direct = faces._facedetect_cnn()
    rows = []
    for path in sorted((media / "photos").iterdir()):
        image = cv2.imread(str(path))
        if image is None:
            continue
        row: dict = {"photo": path.name}
        times: dict[str, list[float]] = {"direct": [], "binding": []}
        for _ in range(5):
            for mode in ("direct", "binding"):
                faces._NATIVE["fn"] = direct if mode == "direct" else None
                t0 = time.perf_counter()
                found = detector.detect(image)
                times[mode].append(1000 * (time.perf_counter() - t0))
                row[f"faces_{mode}"] = len(found)
        faces._NATIVE["fn"] = direct
        for mode, values in times.items():
            row[f"ms_{mode}"] = round(statistics.median(values), 2)
        rows.append(row)
    return rows


def speed_child(calls: int = 1000, blocks: int = 7) -> dict:
    """ms per detector call on a 64x64 image and a 640x360 frame, both calls in alternating blocks."""
    import cv2
    import numpy as np

    import emolens.faces as faces
    from emolens.faces import YuNetDetector

    detector = YuNetDetector()
    direct = faces._facedetect_cnn()
    photo = cv2.imread(str(SAMPLE))
    images = {"64x64": np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8),
              "640x360": np.ascontiguousarray(cv2.resize(photo, (640, 360), interpolation=cv2.INTER_AREA))}
    out: dict = {}
    for name, image in images.items():
        n = calls if name == "64x64" else calls // 20
        times: dict[str, list[float]] = {"direct": [], "binding": []}
        for _ in range(blocks):
            for mode in ("direct", "binding"):
                faces._NATIVE["fn"] = direct if mode == "direct" else None
                t0 = time.perf_counter()
                for _ in range(n):
                    detector.detect(image)
                times[mode].append(1000 * (time.perf_counter() - t0) / n)
        out[name] = {mode: round(statistics.median(values), 3) for mode, values in times.items()}
    faces._NATIVE["fn"] = direct
    return out


# ------------------------------------------------------------------------------------- part 4


def bombs_child() -> list[dict]:
    """Crafted bombs (the tests' makers) against a server on 127.0.0.1 with the default limits:
    status, seconds and peak RSS growth of this process (server included) per probe."""
    import threading

    import httpx
    from websockets.sync.client import connect

    sys.path.insert(0, str(REPO / "tests"))
    from test_media_limits import VIDEO_SCRIPT, jpeg_declaring, png_declaring

    from emolens.server import ServerConfig, create_app, running_server

    def probe(what: str, fn: object) -> dict:
        peak, stop = [rss_mib()], threading.Event()
        start = peak[0]

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mib())
                stop.wait(0.002)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        t0 = time.perf_counter()
        answer = fn()  # type: ignore[operator]
        elapsed = time.perf_counter() - t0
        stop.set()
        thread.join()
        return {"probe": what, "answer": answer, "seconds": round(elapsed, 3),
                "peak_rss_growth_mib": round(max(peak[0], rss_mib()) - start, 1)}

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "frames_16000.mp4"
        subprocess.run([sys.executable, "-c", VIDEO_SCRIPT, str(video), "16000"], check=True, timeout=600)
        with running_server(create_app(ServerConfig(jobs_dir=Path(tmp) / "jobs"))) as url, \
                httpx.Client(base_url=url, timeout=120) as client:
            client.post("/api/image", files={"file": ("ok.jpg", SAMPLE.read_bytes(), "image/jpeg")})
            for side in (30000, 65500):
                for kind, craft in (("jpeg", jpeg_declaring), ("png", png_declaring)):
                    data = craft(side, side)
                    rows.append(probe(f"POST /api/image {kind} {side}x{side} ({len(data)} B)", lambda d=data, k=kind: (
                        client.post("/api/image", files={"file": (f"b.{k}", d, f"image/{k}")}).status_code)))
            with connect(url.replace("http", "ws") + "/api/live", open_timeout=10) as ws:
                for side in (30000, 65500):
                    data = jpeg_declaring(side, side)
                    rows.append(probe(f"WS /api/live jpeg {side}x{side}", lambda d=data: (
                        ws.send(d), json.loads(ws.recv(timeout=30)).get("error", "")[:40])[1]))
                    rows.append(probe("WS /api/live next good frame", lambda: (
                        ws.send(SAMPLE.read_bytes()), len(json.loads(ws.recv(timeout=30)).get("faces", [])))[1]))
            size = video.stat().st_size
            rows.append(probe(f"POST /api/jobs H.264 16000x16000 ({size} B)", lambda: client.post(
                "/api/jobs", files={"file": ("v.mp4", video.read_bytes(), "video/mp4")}).status_code))
    return rows


# ------------------------------------------------------------------------------------- part 3


def make_face_video(path: Path, minutes: float, fps: int, side: int = 64) -> int:
    """Encode a ``side``x``side`` H.264 video of one face drifting slowly; returns its frame count."""
    import av
    import cv2
    import numpy as np

    from emolens.faces import YuNetDetector

    image = cv2.imread(str(SAMPLE))
    x, y, w, h = YuNetDetector().detect(image)[0].box.astype(int)
    cx, cy, half = x + w // 2, y + h // 2, int(max(w, h) * 1.0)
    canvas = cv2.resize(image[cy - half:cy + half, cx - half:cx + half], (side + 16, side + 16),
                        interpolation=cv2.INTER_AREA)
    frames = int(minutes * 60 * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "30"}
        for i in range(frames):
            t = i / fps
            dx, dy = int(8 + 7 * np.sin(t / 3)), int(8 + 7 * np.cos(t / 5))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(canvas[dy:dy + side, dx:dx + side]),
                                               format="bgr24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return frames


def run_video(video: Path, mode: str, out: Path) -> dict:
    """Peak RSS and wall time of one ``emolens video`` process (``wait4``)."""
    args = ["video", str(video), "--out", str(out), "--modality", "face", "--no-annotate", "--no-progress"]
    cmd = [sys.executable, "-m", "emolens.cli", *args] if mode == "direct" else [sys.executable, "-c", BINDING_CLI,
                                                                                 *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-2:]
    summary = json.loads((out / f"{video.stem}.summary.json").read_text())
    return {"mode": mode, "video": video.name, "exit": os.waitstatus_to_exitcode(status),
            "frames": summary["frames_analysed"], "tracks": len(summary["tracks"]),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 1), "stderr": tail}


# ------------------------------------------------------------------------------------- main


def child(args: list[str]) -> object:
    """Run one part in a fresh interpreter and return its JSON."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50_000, help="detector calls in part 1")
    parser.add_argument("--short-min", type=float, default=5.0, help="minutes of the short video")
    parser.add_argument("--long-min", type=float, default=60.0, help="minutes of the long video")
    parser.add_argument("--fps", type=int, default=15, help="frame rate of the synthetic videos")
    parser.add_argument("--media", type=Path, default=MEDIA, help="folder holding photos/")
    parser.add_argument("--skip-video", action="store_true", help="parts 1 and 2 only")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # internal: detector-*, bombs, speed, photos
    opts = parser.parse_args()
    if opts.part:
        if opts.part.startswith("detector-"):
            result: object = detector_child(opts.part.split("-", 1)[1], opts.calls)
        elif opts.part == "speed":
            result = speed_child()
        elif opts.part == "bombs":
            result = bombs_child()
        else:
            result = photos_child(opts.media)
        print(json.dumps(result))
        return

    report: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_name(),
                    "cores": os.cpu_count(), "python": platform.python_version(),
                    "command": "python " + " ".join([Path(__file__).relative_to(REPO).as_posix(), *sys.argv[1:]])}
    report["detector"] = [child(["--part", f"detector-{mode}", "--calls", str(opts.calls)])
                          for mode in ("direct", "binding")]
    for row in report["detector"]:
        print(f"detector {row['mode']}: {row['calls']} calls, RSS {row['rss_mib'][0][1]} -> {row['rss_mib'][-1][1]} "
              f"MiB ({row['kib_per_call']} KiB/call), {row['ms_per_call']} ms/call", flush=True)
    report["bombs"] = child(["--part", "bombs"])
    for row in report["bombs"]:
        print(f"{row['probe']}: {row['answer']} in {row['seconds']} s, peak RSS +{row['peak_rss_growth_mib']} MiB",
              flush=True)
    report["speed_ms_per_call"] = child(["--part", "speed"])
    for name, row in report["speed_ms_per_call"].items():
        print(f"speed {name}: direct {row['direct']} ms/call, binding {row['binding']} ms/call", flush=True)
    if (opts.media / "photos").is_dir():
        report["photos"] = child(["--part", "photos", "--media", str(opts.media)])
        for row in report["photos"]:
            print(f"  {row['photo']:<30} faces {row['faces_direct']} / {row['faces_binding']}  "
                  f"ms {row['ms_direct']} / {row['ms_binding']}", flush=True)
    if not opts.skip_video:
        report["video"] = []
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            videos = {}
            for name, minutes in (("short", opts.short_min), ("long", opts.long_min)):
                path = folder / f"face64_{minutes:g}min.mp4"
                t0 = time.perf_counter()
                frames = make_face_video(path, minutes, opts.fps)
                print(f"encoded {path.name}: {frames} frames in {time.perf_counter() - t0:.0f} s", flush=True)
                videos[name] = path
            for mode in ("direct", "binding"):
                for name, path in videos.items():
                    out = folder / f"out_{mode}_{name}"
                    row = run_video(path, mode, out)
                    row["length"] = name
                    report["video"].append(row)
                    print(f"video {mode} {name}: {row['frames']} frames, {row['tracks']} track(s), "
                          f"peak RSS {row['peak_rss_mib']} MiB, {row['wall_s']} s", flush=True)
        for mode in ("direct", "binding"):
            rows = {r["length"]: r for r in report["video"] if r["mode"] == mode}
            ratio = rows["long"]["peak_rss_mib"] / rows["short"]["peak_rss_mib"]
            report[f"video_long_over_short_{mode}"] = round(ratio, 3)
            print(f"{mode}: long/short peak RSS = {ratio:.3f}", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
