"""A throwaway Ray head on 127.0.0.1 (for tests, benchmarks and trying ``--engine ray`` on one machine).

>>> from emolens.batch.ray_head import local_ray_head
>>> with local_ray_head(cpus=2, log="ray-head.log") as address:
...     run_batch(inputs, out, settings, engine="ray", address=address)

The head runs ``ray start --head --block`` in its own process session with free ports and its own
temporary folder; leaving the block ends that session's processes (not ``ray stop``, which would
stop every Ray on the machine). It is reachable on 127.0.0.1 only and lives for one block, so it
runs without token authentication (Ray turns that on when ``~/.ray/auth_token`` exists, and a
driver given an explicit address does not send the token).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Environment of the head: token authentication off (see the module docstring).
HEAD_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}
_PORT_OPTIONS = ("--ray-client-server-port", "--dashboard-port", "--dashboard-agent-listen-port",
                 "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host:port``."""
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def session_pids(sid: int) -> list[int]:
    """Processes of session ``sid`` (Linux ``/proc``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid:
                pids.append(int(entry))
    return pids


def _end_session(head: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_pids(head.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            head.wait(timeout=3)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(1)


@contextmanager
def local_ray_head(cpus: int = 2, log: str | os.PathLike | None = None, timeout_s: float = 120.0) -> Iterator[str]:
    """Start a Ray head with ``cpus`` CPUs on 127.0.0.1 and yield its address (``127.0.0.1:PORT``);
    ``log``: where its output goes. Raises ``RuntimeError`` when it does not come up in ``timeout_s``."""
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="emolens-ray-", dir="/tmp"))
    cmd = ["ray", "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--num-cpus", str(cpus), "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp)]
    for option in _PORT_OPTIONS:
        cmd += [option, str(free_port())]
    log_path = Path(log) if log else temp / "head.log"
    with open(log_path, "w") as out:
        head = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=HEAD_ENV)
    try:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and head.poll() is None and not port_open(port):
            time.sleep(0.2)
        if head.poll() is not None or not port_open(port):
            raise RuntimeError(f"ray start failed: {log_path.read_text()[-2000:]}")
        time.sleep(2.0)  # let the raylet register before the first driver connects
        yield f"127.0.0.1:{port}"
    finally:
        _end_session(head)
        shutil.rmtree(temp, ignore_errors=True)
