"""Where a batch runs: a local process pool (:func:`local_results`) or Ray actors
(:func:`ray_results`). Both run :class:`~emolens.batch.worker.BatchWorker` jobs, one thread per
worker, models loaded once per worker, and yield :class:`~emolens.batch.jobs.JobResult` s as
inputs finish."""

from __future__ import annotations

# Only the standard library at module level, here and in every module of emolens.batch: worker
# processes import them before their initializer caps the threads of the numeric libraries.
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emolens.batch.jobs import BatchSettings, Job, JobResult, now
from emolens.batch.worker import BatchWorker

ENGINES = ("local", "ray")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

_WORKER: BatchWorker | None = None


def _limit_threads() -> None:
    """One thread for the numeric libraries of this process (OpenCV's pool too)."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    import cv2

    cv2.setNumThreads(1)


@contextmanager
def _one_thread_env() -> Iterator[None]:
    """``OMP_NUM_THREADS=1``... in this process's environment while worker processes are
    spawned (they read it when their libraries load, which can be before their initializer runs)."""
    before = {var: os.environ.get(var) for var in _THREAD_VARS}
    os.environ.update(dict.fromkeys(_THREAD_VARS, "1"))
    try:
        yield
    finally:
        for var, value in before.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def _watch_parent(parent: int) -> None:
    """Exit this worker when its parent is gone (killed): no orphan keeps computing."""
    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="emolens-parent-watch", daemon=True).start()


def _init_local_worker(settings: dict[str, Any], out_dir: str, parent: int) -> None:
    """Pool-worker initializer: one thread per numeric library (set before any model loads),
    Ctrl-C left to the parent, and the worker's models."""
    global _WORKER
    _limit_threads()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_parent(parent)
    _WORKER = BatchWorker(BatchSettings(**settings), out_dir)


def _run_local_job(job: Job) -> JobResult:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.run(job)


def _failed(job: Job, message: str) -> JobResult:
    return JobResult(job.input, job.kind, job.stem, "failed", message, finished=now())


def local_results(jobs: Sequence[Job], settings: BatchSettings, out_dir: Path, workers: int) -> Iterator[JobResult]:
    """Run ``jobs`` on a pool of ``workers`` processes (spawned; one thread each; models loaded
    once per process); yields results as inputs finish. Closing the iterator early (Ctrl-C)
    cancels the queued inputs and stops the workers."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_local_worker, initargs=(settings.to_dict(), str(out_dir), os.getpid()))
    processes: dict = {}
    finished = False
    try:
        with _one_thread_env():  # the workers start during the first submissions
            futures = {pool.submit(_run_local_job, job): job for job in jobs}
        processes = dict(getattr(pool, "_processes", None) or {})
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            processes.update(getattr(pool, "_processes", None) or {})
            for fut in done:
                job = futures[fut]
                try:
                    result = fut.result()
                except BrokenProcessPool as exc:
                    result = _failed(job, f"the worker process died ({exc})")
                except Exception as exc:  # noqa: BLE001
                    result = _failed(job, f"{job.input}: unexpected {type(exc).__name__}: {exc}")
                yield result
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:  # interrupted: drop the queue and stop the workers mid-input (those inputs are redone later)
            processes.update(getattr(pool, "_processes", None) or {})
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in processes.values():
                if proc.is_alive():
                    proc.terminate()
            for proc in processes.values():
                proc.join(timeout=5)
            # let the pool's manager thread see its dead workers and end now: joined here, it cannot
            # race the interpreter's exit hook of concurrent.futures (a traceback at shutdown)
            manager = getattr(pool, "_executor_manager_thread", None)
            if manager is not None:
                manager.join(timeout=5)


class RayWorker:
    """The body of a Ray actor: one :class:`BatchWorker` (models loaded once per actor)."""

    def __init__(self, settings: dict[str, Any], out_dir: str) -> None:
        _limit_threads()
        self.worker = BatchWorker(BatchSettings(**settings), out_dir)

    def run(self, job: Job) -> JobResult:
        """Analyse one input."""
        return self.worker.run(job)


def ray_available() -> bool:
    """True when Ray can be imported (``pip install 'emolens[ray]'``)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Raise ``ConnectionError`` when nothing listens at a ``HOST:PORT`` Ray address (Ray itself
    would wait for it without end)."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", ray://... : left to Ray
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); "
                              f"start one with `ray start --head --port {port}`") from None


def ray_results(jobs: Sequence[Job], settings: BatchSettings, out_dir: Path, workers: int | None,
                address: str | None = None, notes: list[str] | None = None) -> Iterator[JobResult]:
    """Run ``jobs`` on Ray actors (``num_cpus=1`` each, models loaded once per actor), one input
    at a time per actor, the next handed to whichever actor frees up first. ``address``: an
    existing cluster (``HOST:6379``); None starts a local Ray for this run. ``workers`` (None:
    the cluster's CPUs) is capped at the cluster's CPUs. Inputs and ``out_dir`` must be paths
    every node can read and write (shared storage)."""
    import ray
    from ray.exceptions import RayError

    notes = notes if notes is not None else []
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
        if address:
            _check_reachable(address)
            ray.init(address=address, **kwargs)
        else:
            ray.init(include_dashboard=False, **kwargs)
    actors: list = []
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = min(workers or cpus, cpus, max(len(jobs), 1))
        if workers and workers > cpus:
            notes.append(f"the Ray cluster has {cpus} CPU(s): {cpus} worker(s), not {workers}")
        remote = ray.remote(num_cpus=1, max_restarts=0)(RayWorker)
        blob = settings.to_dict()
        queue = deque(jobs)
        running: dict = {}

        def submit(actor: Any) -> None:
            if queue:
                job = queue.popleft()
                running[actor.run.remote(job)] = (actor, job)

        for _ in range(n):
            actors.append(remote.remote(blob, str(out_dir)))
            submit(actors[-1])
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in ready:
                actor, job = running.pop(ref)
                try:
                    result = ray.get(ref)
                except RayError as exc:  # the actor died (killed, out of memory): a new one takes over
                    result = _failed(job, f"the Ray worker failed: {str(exc).splitlines()[0][:300]}")
                    ray.kill(actor)
                    actor = remote.remote(blob, str(out_dir))
                    actors.append(actor)
                yield result
                submit(actor)
    finally:
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001  (already gone)
                pass
        if started:
            ray.shutdown()
