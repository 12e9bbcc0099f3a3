"""Probes of the server's hardening, run against ``emolens serve`` as an attacker and a careless
client would: spoofed ``Host`` and ``Origin`` (REST and WebSocket), tokens and job ownership,
non-finite numbers, a file in the wrong form field, a full disk quota, half-sent requests (how long
until the server closes them), private job folders, and a schema-based fuzz run (schemathesis).

Each server is ``emolens serve`` in its own process on 127.0.0.1 (a free port, a temporary jobs
folder) with its default settings unless a probe says otherwise. Everything is bounded and stops
by itself. Results: ``benchmarks/results/hardening_server.{json,md}``.

    python benchmarks/bench_server_hardening.py [--fuzz-examples 150] [--media ../shared/media]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import socket
import stat
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx

from emolens.server.harness import read_until_closed, serve_process, wait_job

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ALPHA, BETA = "alpha-token-0123456789", "beta-token-9876543210"


def machine() -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import cpu_name

    return (f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f} at start")


@contextlib.contextmanager
def serve(*args: str, env: dict | None = None) -> Iterator[tuple[str, Path]]:
    """``emolens serve ARGS`` on a free port; yields its URL and jobs folder."""
    with tempfile.TemporaryDirectory() as tmp, serve_process(*args, jobs_dir=Path(tmp) / "jobs", env=env) as (url, _):
        yield url, Path(tmp) / "jobs"


def answer(r: httpx.Response) -> dict:
    try:
        detail = r.json().get("detail")
    except ValueError:
        detail = r.text[:120]
    return {"status": r.status_code, "detail": detail}


def ws_status(url: str, origin: str | None = None) -> int:
    """HTTP status of a WebSocket handshake (101 when accepted)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    try:
        with connect(url, origin=origin, open_timeout=10, close_timeout=5):  # type: ignore[arg-type]
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def half_sent(url: str, payload: bytes, limit: float = 60.0) -> dict:
    """Send ``payload`` and stop: seconds until the server closes, and its first answer line."""
    u = httpx.URL(url)
    with socket.create_connection((u.host, u.port), timeout=limit) as s:
        s.sendall(payload)
        data, seconds = read_until_closed(s, limit)
        return {"closed_after_s": round(seconds, 2),
                "answer": data.split(b"\r\n", 1)[0].decode("latin-1") or "(closed without an answer)"}


def probes(media: Path) -> dict:
    clip = (media / "video" / "silent.mp4").read_bytes()
    photo = (media / "photos" / "portrait_sad.png").read_bytes()
    out: dict = {}
    with serve() as (url, jobs), httpx.Client(base_url=url, timeout=60) as c:
        port = httpx.URL(url).port
        ws = url.replace("http", "ws") + "/api/live"
        image = {"file": ("s.png", photo, "image/png")}
        out["host"] = {
            "GET /api/health, Host: attacker.example": answer(c.get("/api/health",
                                                                    headers={"Host": "attacker.example"})),
            f"GET /api/health, Host: localhost:{port}": answer(c.get("/api/health",
                                                                     headers={"Host": f"localhost:{port}"})),
            "GET / (the page), Host: attacker.example": answer(c.get("/", headers={"Host": "attacker.example"})),
        }
        out["origin"] = {
            "POST /api/image, Origin: http://attacker.example": answer(
                c.post("/api/image", files=image, headers={"Origin": "http://attacker.example"})),
            "POST /api/image, Origin: null": answer(c.post("/api/image", files=image, headers={"Origin": "null"})),
            f"POST /api/image, Origin: http://127.0.0.1:{port} (own)": answer(
                c.post("/api/image", files=image, headers={"Origin": f"http://127.0.0.1:{port}"})),
            "POST /api/image, no Origin (curl)": answer(c.post("/api/image", files=image)),
            "DELETE /api/jobs/{id}, Origin: http://attacker.example": answer(
                c.delete("/api/jobs/00000000-0000-4000-8000-000000000000",
                         headers={"Origin": "http://attacker.example"})),
            "WS /api/live, Origin: http://attacker.example": {"status": ws_status(ws, "http://attacker.example")},
            "WS /api/live, own Origin": {"status": ws_status(ws, url)},
        }
        u = httpx.URL(url)
        spoofed_ws = half_sent(url, b"GET /api/live HTTP/1.1\r\nHost: attacker.example\r\nUpgrade: websocket\r\n"
                                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                    b"Sec-WebSocket-Version: 13\r\n\r\n", limit=10)
        out["host"]["WS /api/live, Host: attacker.example"] = {"status": spoofed_ws["answer"]}
        out["validation"] = {
            f"POST /api/jobs fps={v}": answer(c.post("/api/jobs", files={"file": ("a.mp4", clip, "video/mp4")},
                                                     data={"fps": v}))
            for v in ("nan", "inf", "1e400", "-1")}
        out["validation"]["POST /api/image, the photo in field 'photo'"] = answer(
            c.post("/api/image", files={"photo": ("s.png", photo, "image/png")}))
        head = f"POST /api/jobs HTTP/1.1\r\nHost: {u.host}:{port}\r\nContent-Type: video/mp4\r\n".encode()
        out["timeouts"] = {
            "connect, send nothing": half_sent(url, b""),
            "half the request headers": half_sent(url, head),
            "headers + 1 kB of a declared 100 kB body": half_sent(
                url, head + b"Content-Length: 100000\r\n\r\n\x00\x00\x00\x18ftypisom" + b"0" * 1000),
        }
        out["timeouts"]["job folders left by the half upload"] = len(list(jobs.iterdir()))
        r = c.post("/api/jobs", files={"file": ("a.mp4", clip, "video/mp4")}, data={"max_frames": "3"})
        job = wait_job(c, r.json()["id"])
        folder = jobs / job["id"]
        modes = Counter(oct(stat.S_IMODE(p.stat().st_mode)) + ("/" if p.is_dir() else "")
                        for p in [folder, *folder.rglob("*")])
        out["job_folder_modes"] = dict(modes)
    with serve(env={"EMOLENS_TOKEN": f"{ALPHA},{BETA}"}) as (url, _), httpx.Client(base_url=url, timeout=60) as c:
        a, b = {"Authorization": f"Bearer {ALPHA}"}, {"X-Emolens-Token": BETA}
        r = c.post("/api/jobs", files={"file": ("a.mp4", clip, "video/mp4")}, data={"max_frames": "3"}, headers=a)
        job_id = r.json()["id"]
        out["tokens"] = {
            "GET /api/health, no token": answer(c.get("/api/health")),
            "GET /api/health, wrong token": answer(c.get("/api/health", headers={"Authorization": "Bearer x"})),
            "GET /api/health, token A": answer(c.get("/api/health", headers=a)),
            "POST /api/jobs, token A": {"status": r.status_code},
            "GET /api/jobs/{A's job}, token B": answer(c.get(f"/api/jobs/{job_id}", headers=b)),
            "DELETE /api/jobs/{A's job}, token B": answer(c.delete(f"/api/jobs/{job_id}", headers=b)),
            "GET /api/jobs, token B: jobs listed": {"status": len(c.get("/api/jobs", headers=b).json())},
            "GET /api/jobs, token A: jobs listed": {"status": len(c.get("/api/jobs", headers=a).json())},
            "WS /api/live, no token": {"status": ws_status(url.replace("http", "ws") + "/api/live")},
            "WS /api/live?token=A": {"status": ws_status(url.replace("http", "ws") + f"/api/live?token={ALPHA}")},
        }
    with serve("--max-jobs-disk-gb", "0.00001") as (url, jobs), httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/api/jobs", files={"file": ("a.mp4", clip, "video/mp4")})
        out["quota"] = {"POST /api/jobs (36 kB) with --max-jobs-disk-gb 0.00001": answer(r),
                        "job folders left": len(list(jobs.iterdir()))}
    return out


def fuzz(examples: int) -> dict:
    """schemathesis over every operation, positive and negative data, ``examples`` cases each."""
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck, Phase, settings
    from schemathesis import GenerationMode
    from schemathesis import checks as sc

    checks = [sc.not_a_server_error, sc.status_code_conformance, sc.content_type_conformance,
              sc.response_schema_conformance, sc.response_headers_conformance]
    statuses: Counter = Counter()
    failures: list[str] = []
    t0 = time.monotonic()
    with serve() as (url, _):
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")

        def run_one(operation: object, mode: GenerationMode) -> None:
            mode_checks = checks + ([sc.negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))  # type: ignore[attr-defined]
            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            def run(case: object) -> None:
                response = case.call(base_url=url, timeout=60)  # type: ignore[attr-defined]
                statuses[response.status_code] += 1
                try:
                    case.validate_response(response, checks=mode_checks)  # type: ignore[attr-defined]
                except BaseException as exc:  # noqa: BLE001  (schemathesis raises a BaseExceptionGroup)
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:300]}")  # type: ignore[attr-defined]

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                pass

        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run_one(operation, mode)
    return {"schemathesis": schemathesis.__version__ if hasattr(schemathesis, "__version__") else "?",
            "operations": len(operations), "examples_per_operation_and_mode": examples,
            "cases": sum(statuses.values()), "statuses": dict(sorted(statuses.items())),
            "server_errors": sum(n for s, n in statuses.items() if s >= 500), "failures": len(failures),
            "failure_samples": failures[:5], "seconds": round(time.monotonic() - t0, 1)}


def write_md(result: dict, path: Path) -> None:
    lines = ["# emolens server hardening: probes", "",
             f"- date: {result['date']}", f"- command: `{result['command']}`", f"- machine: {result['machine']}",
             "- servers: `emolens serve` in its own process on 127.0.0.1, default settings unless noted "
             "(request timeouts 10 s, keep-alive 5 s, 24 h / 5 GB retention)", ""]
    for section, title in (("host", "Host header (DNS rebinding)"), ("origin", "Origin (other sites' pages)"),
                           ("tokens", "Access tokens (`EMOLENS_TOKEN=A,B emolens serve`)"),
                           ("validation", "Validation"), ("quota", "Disk quota")):
        lines += [f"## {title}", "", "| request | status | detail |", "|---|---|---|"]
        for name, value in result["probes"][section].items():
            if isinstance(value, dict):
                lines.append(f"| {name} | {value.get('status')} | {str(value.get('detail') or '')[:260]} |")
            else:
                lines.append(f"| {name} | {value} | |")
        lines.append("")
    lines += ["## Half-sent requests (default 10 s timeouts)", "", "| sent | closed after (s) | answer |",
              "|---|---|---|"]
    for name, value in result["probes"]["timeouts"].items():
        if isinstance(value, dict):
            lines.append(f"| {name} | {value['closed_after_s']} | {value['answer']} |")
        else:
            lines.append(f"| {name} | {value} | |")
    lines += ["", f"Job folder after a finished job: modes {result['probes']['job_folder_modes']} "
                  "(a trailing / marks folders).", ""]
    f = result["fuzz"]
    lines += [f"## Schema-based fuzzing (schemathesis {f['schemathesis']})", "",
              f"{f['operations']} operations x (positive, negative) x {f['examples_per_operation_and_mode']} examples: "
              f"**{f['cases']} cases** in {f['seconds']} s; statuses {f['statuses']}; "
              f"**{f['server_errors']} server errors, {f['failures']} check failures** (checks: not_a_server_error, "
              "status_code_conformance, content_type_conformance, response_schema_conformance, "
              "response_headers_conformance, and negative_data_rejection for negative data).", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    parser.add_argument("--fuzz-examples", type=int, default=150)
    args = parser.parse_args()
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python benchmarks/bench_server_hardening.py"
                         + (f" --fuzz-examples {args.fuzz_examples}" if args.fuzz_examples != 150 else ""),
              "machine": machine()}
    result["probes"] = probes(args.media)
    result["fuzz"] = fuzz(args.fuzz_examples)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hardening_server.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    write_md(result, RESULTS / "hardening_server.md")
    print((RESULTS / "hardening_server.md").read_text())


if __name__ == "__main__":
    main()
