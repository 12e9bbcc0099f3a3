"""Throughput and latency of the web server's photo endpoint, and that it survives an upload storm.

``emolens serve`` runs as its own process on 127.0.0.1 (a free port, a temporary jobs folder);
the clients (httpx, asyncio) run here, so they do not share the server's GIL.

* photo analysis (``POST /api/image``, multipart) with 1, 8 and 32 concurrent clients: a fixed
  number of requests each (``--requests`` per client, at least 30 in all), after a warm-up;
  requests per second and latency percentiles;
* 50 concurrent uploads at once (the photos of ../shared/media/photos, cycled), with health
  checks during the storm: every upload must be answered 200 and the server must still be up;
* live mode: frames of a face clip sent over the WebSocket (at most 2 in flight, as the web
  page does), answers per second.

Everything is bounded and stops by itself. Results: ``benchmarks/results/server.{json,md}``.

    python benchmarks/bench_server.py [--requests 8] [--media ../shared/media]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from emolens.server.harness import serve_process

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    from _common import cpu_name

    cpu = cpu_name()
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, {system}, Python {platform.python_version()}"


def other_training_jobs() -> list[str]:
    """Command lines of training processes running beside the benchmark (they skew the numbers)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "train" in cmd and ("emolens" in cmd or "train_face" in cmd) and str(os.getpid()) != proc.name:
            found.append(cmd.strip()[:120])
    return found


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))], 1)

    return {"p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": round(1000 * ordered[-1], 1),
            "mean_ms": round(1000 * statistics.fmean(ordered), 1)}


async def photo_load(url: str, data: bytes, clients: int, total: int) -> dict:
    """``total`` requests from ``clients`` concurrent clients (one connection each)."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def worker() -> None:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                r = await client.post("/api/image", files={"file": ("photo.png", data, "image/png")})
                latencies.append(time.perf_counter() - t0)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    return {"clients": clients, "requests": total, "wall_s": round(wall, 2), "rps": round(total / wall, 2),
            "status": codes, **percentiles(latencies)}


async def storm(url: str, files: list[Path], n: int = 50) -> dict:
    """``n`` uploads started at once, health polled during the storm."""
    payloads = [(p.name, p.read_bytes()) for p in files]
    health: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 limits=httpx.Limits(max_connections=n + 5)) as client:
        async def upload(i: int) -> int:
            name, data = payloads[i % len(payloads)]
            ctype = "image/png" if name.endswith(".png") else "image/jpeg"
            r = await client.post("/api/image", files={"file": (name, data, ctype)})
            return r.status_code

        async def poll(done: asyncio.Event) -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                r = await client.get("/api/health")
                if r.status_code == 200:
                    health.append(time.perf_counter() - t0)
                await asyncio.sleep(0.25)

        done = asyncio.Event()
        poller = asyncio.create_task(poll(done))
        start = time.perf_counter()
        codes = await asyncio.gather(*(upload(i) for i in range(n)), return_exceptions=True)
        wall = time.perf_counter() - start
        done.set()
        await poller
        after = (await client.get("/api/health")).status_code
    statuses: dict[str, int] = {}
    for c in codes:
        key = str(c) if isinstance(c, int) else type(c).__name__
        statuses[key] = statuses.get(key, 0) + 1
    return {"uploads": n, "bytes": sum(len(payloads[i % len(payloads)][1]) for i in range(n)), "wall_s": round(wall, 2),
            "status": statuses, "health_checks": len(health),
            "health_max_ms": round(1000 * max(health), 1) if health else None, "alive_after": after == 200}


def live_fps(url: str, clip: Path, frames: int = 120, side: int = 480) -> dict:
    """Frames of ``clip`` over the live WebSocket, at most 2 in flight; answers per second."""
    import av
    import cv2
    from websockets.sync.client import connect

    jpegs = []
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="bgr24")
            scale = side / max(image.shape[:2])
            image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
            jpegs.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes())
            if len(jpegs) >= frames:
                break
    answers, dropped, ms = 0, 0, []
    with connect(url.replace("http", "ws") + "/api/live", open_timeout=30, max_size=2**24) as ws:
        start = time.perf_counter()
        sent = inflight = 0
        while sent < len(jpegs) or inflight:
            while inflight < 2 and sent < len(jpegs):
                ws.send(jpegs[sent])
                sent, inflight = sent + 1, inflight + 1
            msg = json.loads(ws.recv(timeout=60))
            inflight -= 1
            if msg.get("dropped") is True:
                dropped += 1
            elif "faces" in msg:
                answers += 1
                ms.append(msg["ms"])
        wall = time.perf_counter() - start
    return {"frames_sent": len(jpegs), "frame_side_px": side, "answers": answers, "dropped": dropped,
            "fps": round(answers / wall, 1), "analysis_ms_p50": statistics.median(ms) if ms else None}


def write_results(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "server.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# emolens server benchmark", "",
        f"- date: {result['date']}",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']}; load average {result['load_before']} at start",
        f"- concurrent work: {result['concurrent_note']}",
        f"- server: `emolens serve` in its own process on 127.0.0.1, {result['server_workers']} analysis threads; "
        f"clients: httpx (asyncio) in the benchmark process",
        f"- photo: `{result['photo']}` ({result['photo_bytes'] / 1000:.0f} kB, 1 face), multipart upload", "",
        "## Photo analysis (`POST /api/image`)", "",
        "| clients | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["photo_load"]:
        lines.append(f"| {r['clients']} | {r['requests']} | {r['rps']} | {r['p50_ms']} | {r['p90_ms']} | "
                     f"{r['p99_ms']} | {r['max_ms']} | {r['status']} |")
    s = result["storm"]
    lines += ["", "## 50 concurrent uploads", "",
              f"{s['uploads']} photo uploads started at once ({s['bytes'] / 1e6:.1f} MB in all, the "
              f"{result['storm_files']} photos of ../shared/media/photos cycled): answered in {s['wall_s']} s, "
              f"status {s['status']}; {s['health_checks']} health checks during the storm, slowest "
              f"{s['health_max_ms']} ms; server up afterwards: {s['alive_after']}.", ""]
    lv = result.get("live")
    if lv:
        lines += ["## Live WebSocket", "",
                  f"{lv['frames_sent']} frames of one_face_640x360.mp4 (JPEG, {lv['frame_side_px']} px), at most 2 "
                  f"in flight: {lv['answers']} analysed, {lv['dropped']} dropped, **{lv['fps']} answers/s**, "
                  f"{lv['analysis_ms_p50']} ms analysis per frame (median).", ""]
    (out / "server.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    ap.add_argument("--requests", type=int, default=8, help="requests per client (at least 30 per level)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    photo = args.media / "photos" / "portrait_happy.png"
    if not photo.is_file():
        sys.exit(f"needs {photo}")
    load_before = round(os.getloadavg()[0], 2)
    training = other_training_jobs()
    with tempfile.TemporaryDirectory() as jobs, serve_process(jobs_dir=jobs, timeout=120) as (url, server):
        health = httpx.get(f"{url}/api/health", timeout=10).json()
        data = photo.read_bytes()
        asyncio.run(photo_load(url, data, 1, 3))  # warm-up
        loads = []
        for clients in (1, 8, 32):
            total = max(30, clients * args.requests)
            loads.append(asyncio.run(photo_load(url, data, clients, total)))
            print(loads[-1], flush=True)
        files = sorted(p for p in (args.media / "photos").iterdir() if p.suffix.lower() in (".jpg", ".png"))
        storm_result = asyncio.run(storm(url, files))
        print(storm_result, flush=True)
        live = live_fps(url, args.media / "video" / "one_face_640x360.mp4")
        print(live, flush=True)
        alive = server.poll() is None and httpx.get(f"{url}/api/health", timeout=10).status_code == 200
    note = (f"{len(training)} model-training process(es) were running on the same cores during the run, so "
            "these numbers are lower than on an idle machine" if training else "none detected")
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/bench_server.py", *sys.argv[1:]]),
        "machine": machine(), "load_before": load_before, "concurrent_note": note, "training_processes": training,
        "server_workers": min(4, os.cpu_count() or 1), "photo": photo.name, "photo_bytes": len(data),
        "version": health.get("version"), "photo_load": loads, "storm": storm_result, "storm_files": len(files),
        "live": live, "server_alive_at_end": alive,
    }
    write_results(result, args.out)
    print(f"wrote {args.out / 'server.json'} and server.md")
    if not (alive and storm_result["alive_after"]):
        sys.exit("the server did not survive")


if __name__ == "__main__":
    main()
