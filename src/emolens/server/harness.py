"""An ``emolens serve`` process for tests and benchmarks, and raw-socket reading until the server hangs up.

>>> with serve_process(jobs_dir=tmp / "jobs") as (url, proc):
...     httpx.get(f"{url}/api/health")
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def serve_process(*args: str, jobs_dir: str | os.PathLike, env: dict | None = None,
                  timeout: float = 90.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """``emolens serve ARGS`` on a free port until the block ends; yields its URL and process once
    ``/api/health`` answers (any status). Its output goes to a temporary file (a pipe nobody reads
    could fill and stall the server) and is quoted in the error when it does not start."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "emolens.cli", "serve", "--port", str(port), "--jobs-dir", str(jobs_dir),
           "--log-level", "warning", *args]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **(env or {})})
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    httpx.get(f"{url}/api/health", timeout=2)
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError(f"emolens serve {' '.join(args)} did not start within {timeout:.0f} s: "
                                           f"{log.read()[-2000:]}") from None
                    time.sleep(0.2)
            yield url, proc
        finally:
            stop_process(proc)


def wait_job(client: httpx.Client, job_id: str, headers: dict | None = None, timeout: float = 180.0) -> dict:
    """Poll ``/api/jobs/ID`` until the job is done or failed; the job's JSON, with ``seen``: the
    ``frames_done`` values observed on the way. ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    seen: list = []
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        seen.append(job.get("progress", {}).get("frames_done"))
        if job["status"] in ("done", "failed"):
            return {**job, "seen": seen}
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f} s: {seen[-5:]}")


def read_until_closed(sock: socket.socket, limit: float = 15.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection (or ``limit`` seconds pass), and
    the seconds that took."""
    t0 = time.monotonic()
    sock.settimeout(limit)
    data = b""
    while time.monotonic() - t0 < limit:
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - t0


__all__ = ["free_port", "read_until_closed", "serve_process", "stop_process", "wait_job"]
