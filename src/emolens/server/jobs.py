"""Background video jobs: one folder per job, one worker thread, progress, results kept until deleted.

Layout: ``<jobs_dir>/<uuid>/job.json`` (state), ``input<.ext>`` (the upload) and ``out/``
(``video.frames.csv``, ``video.summary.json``, ``video.annotated.mp4`` written by
:meth:`emolens.video.VideoAnalyzer.run`, whose frame-loop hooks report progress and stop a
deleted job). The sound track is analysed once, by that run (``summary["voice"]``). Job ids
are random UUIDs; every lookup validates the id before it touches the disk, so no request can
name a path outside the jobs folder. Job folders are private to the server's user (0700, files
0600).

Retention: finished jobs older than ``keep_hours`` are removed, and while the jobs folder holds
more than ``max_disk_bytes`` (all jobs, uploads in progress included) the oldest finished jobs
go first; this runs at startup, every minute, after each job and before each new upload, and
:meth:`JobManager.reserve` refuses an upload that would not fit (:class:`QuotaError`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import queue
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STEM = "video"
#: Downloadable results of a finished job: URL name -> (file in ``out/``, media type).
RESULT_FILES = {
    "frames.csv": (f"{STEM}.frames.csv", "text/csv"),
    "summary.json": (f"{STEM}.summary.json", "application/json"),
    "annotated.mp4": (f"{STEM}.annotated.mp4", "video/mp4"),
}


FINISHED = ("done", "failed")
PRUNE_INTERVAL_S = 60.0
GB = 1_000_000_000


class JobCancelled(Exception):
    """Raised inside a running job when it was deleted."""

_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")
_OPERATOR_HINT = re.compile(r"emolens serve(?: --[a-z][a-z0-9-]*)+")


def api_message(text: str) -> str:
    """A library/CLI error message in the words of the REST API: command-line flags (``--fps``,
    ``--max-frames``) become the names of the request's form fields (``fps``, ``max_frames``).
    Hints for the server's operator (``emolens serve --max-jobs-disk-gb``) keep their flags."""
    hints: list[str] = []

    def keep(m: re.Match) -> str:
        hints.append(m.group(0))
        return f"\0{len(hints) - 1}\0"

    out = _FLAG.sub(lambda m: m.group(1).replace("-", "_"), _OPERATOR_HINT.sub(keep, text))
    return re.sub("\0(\\d+)\0", lambda m: hints[int(m.group(1))], out)



class QuotaError(Exception):
    """An upload would take the jobs folder past its disk quota."""


def make_private_dir(path: Path) -> None:
    """Create ``path`` (one level) readable by this user only (0700)."""
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (created 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def make_private(folder: Path) -> None:
    """Folders 0700 and files 0600 in and below ``folder`` (what other code wrote with the umask)."""
    try:
        os.chmod(folder, 0o700)
        for root, dirs, files in os.walk(folder):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o700)
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o600)
    except OSError:
        pass  # removed meanwhile


def human_size(nbytes: float) -> str:
    """``1.23 GB``, ``45.6 MB`` or ``7.8 kB``."""
    for unit, size in (("GB", GB), ("MB", 1_000_000)):
        if nbytes >= size:
            return f"{nbytes / size:.2f} {unit}" if unit == "GB" else f"{nbytes / size:.1f} {unit}"
    return f"{nbytes / 1000:.1f} kB"


def folder_bytes(folder: Path) -> int:
    """Bytes of the files in and below ``folder`` (0 when it is gone)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def valid_job_id(job_id: str) -> bool:
    """True for a canonical lower-case UUID (the only names job folders ever get)."""
    return bool(_UUID.match(job_id))


@dataclass
class Job:
    """State of one video job (saved as ``job.json`` in its folder)."""

    id: str
    filename: str
    input_name: str
    options: dict
    status: str = "queued"  #: queued, running, done, failed
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    frames_done: int = 0
    frames_total: int | None = None
    error: str | None = None
    voice: dict | None = None
    owner: str | None = None  #: hash of the access token that created the job (None: tokens off)
    cancel: bool = field(default=False, repr=False)

    def public(self) -> dict:
        """The ``GET /api/jobs/{id}`` view (no server paths)."""
        total = self.frames_total
        if self.status == "done":
            fraction = 1.0
        elif total:
            fraction = round(min(1.0, self.frames_done / total), 4)
        else:
            fraction = None
        d = {k: v for k, v in asdict(self).items() if k not in ("cancel", "input_name", "owner")}
        d["progress"] = {"frames_done": self.frames_done, "frames_total": total, "fraction": fraction}
        base = f"/api/jobs/{self.id}"
        d["links"] = {"self": base, "result": f"{base}/result", "timeline": f"{base}/timeline",
                      **({name: f"{base}/files/{name}" for name in RESULT_FILES} if self.status == "done" else {})}
        return d


class JobManager:
    """Owns ``root`` (the jobs folder) and a worker thread that runs queued video jobs one at a time.

    ``thread_init()`` (optional) runs first in the worker thread; ``model``/``device``: the face
    model and where the models run. ``keep_hours``: finished jobs older than this are removed
    (0: no age limit); ``max_disk_bytes``: quota of the jobs folder (0: none).
    """

    def __init__(self, root: str | Path, max_queued: int = 16,
                 thread_init: Callable[[], None] | None = None, model: str = "default",
                 keep_hours: float = 24.0, max_disk_bytes: int = 5 * GB, device: str = "cpu") -> None:
        self.model, self.device = model, device
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_queued = max_queued
        self.keep_hours = keep_hours
        self.max_disk_bytes = max_disk_bytes
        self.reserved: dict[str, int] = {}  #: job id -> bytes an upload in progress may still write
        self._last_prune = 0.0
        self.thread_init = thread_init
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.queue: queue.Queue[str] = queue.Queue()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self._load()
        self.prune()

    # -- folders and state ------------------------------------------------------------------------
    def folder(self, job_id: str) -> Path:
        """The folder of a job id (validated: a UUID directly below the jobs folder)."""
        if not valid_job_id(job_id):
            raise KeyError(job_id)
        return self.root / job_id

    def new_folder(self) -> tuple[str, Path]:
        """A fresh random job id and its (created, private) folder."""
        job_id = str(uuid.uuid4())
        path = self.folder(job_id)
        make_private_dir(path)
        return job_id, path

    def _save(self, job: Job) -> None:
        path = self.folder(job.id) / "job.json"
        if not path.parent.is_dir():
            return
        data = {k: v for k, v in asdict(job).items() if k != "cancel"}
        tmp = path.with_name("job.json.tmp")
        write_private(tmp, json.dumps(data, indent=1, allow_nan=False))  # standard JSON only (no NaN/Infinity)
        tmp.replace(path)

    def _load(self) -> None:
        """Pick up the jobs of an earlier run: finished ones are kept, queued ones run again, and
        one that was running when the server stopped is marked failed."""
        for path in sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime):
            if not (path.is_dir() and valid_job_id(path.name)):
                continue
            if not (path / "job.json").is_file():  # an upload cut short by a crash
                if time.time() - path.stat().st_mtime > 6 * 3600:
                    shutil.rmtree(path, ignore_errors=True)
                continue
            try:
                data = json.loads((path / "job.json").read_text(encoding="utf-8"))
                job = Job(**{k: v for k, v in data.items() if k in Job.__dataclass_fields__})
            except (ValueError, TypeError, OSError):
                continue
            make_private(path)  # folders of older versions were 0755/0644
            if job.status == "running":
                job.status, job.error, job.finished = "failed", "the server stopped while this job ran", time.time()
                self._save(job)
            self.jobs[job.id] = job
            if job.status == "queued":
                self.queue.put(job.id)

    def submit(self, job_id: str, filename: str, input_name: str, options: dict,
               frames_total: int | None = None, owner: str | None = None) -> Job:
        """Queue a job whose input is already in its folder. Raises OverflowError when the queue is full."""
        with self.lock:
            waiting = sum(j.status == "queued" for j in self.jobs.values())
            if waiting >= self.max_queued:
                raise OverflowError(f"{waiting} video jobs are waiting already; try again later")
            job = Job(job_id, filename, input_name, options, frames_total=frames_total, owner=owner)
            self.jobs[job_id] = job
            self._save(job)
        self.queue.put(job_id)
        return job

    def get(self, job_id: str) -> Job:
        """The job, or KeyError."""
        with self.lock:
            return self.jobs[job_id]

    def list(self) -> list[Job]:
        """All jobs, newest first."""
        with self.lock:
            return sorted(self.jobs.values(), key=lambda j: -j.created)

    # -- retention and quota ----------------------------------------------------------------------
    def disk_usage(self) -> dict[str, int]:
        """Bytes on disk per job folder (every job folder, uploads in progress included)."""
        usage = {}
        for path in self.root.iterdir():
            if path.is_dir() and valid_job_id(path.name):
                usage[path.name] = folder_bytes(path)
        return usage

    def prune(self, now: float | None = None, room: int = 0) -> list[str]:
        """Remove finished jobs older than ``keep_hours``, then the oldest finished jobs while the
        folder holds more than ``max_disk_bytes`` less ``room`` (uploads in progress count with what
        they may still write). Returns the removed job ids."""
        now = time.time() if now is None else now
        self._last_prune = time.monotonic()
        usage = self.disk_usage()
        removed = []
        with self.lock:
            finished = sorted((j for j in self.jobs.values() if j.status in FINISHED),
                              key=lambda j: j.finished or j.created)
            total = sum(usage.values()) + sum(self.reserved.values())
            for job in finished:
                too_old = self.keep_hours > 0 and now - (job.finished or job.created) > self.keep_hours * 3600
                over = self.max_disk_bytes > 0 and total + room > self.max_disk_bytes
                if not (too_old or over):
                    continue
                del self.jobs[job.id]
                removed.append(job.id)
                total -= usage.get(job.id, 0)
        for job_id in removed:
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
        return removed

    def reserve(self, job_id: str, nbytes: int) -> None:
        """Book room for an upload of up to ``nbytes`` into ``job_id``'s folder (after :meth:`prune`);
        raises :class:`QuotaError` when it does not fit. :meth:`release` ends the booking."""
        self.prune(room=nbytes)
        if self.max_disk_bytes <= 0:
            return
        used = sum(self.disk_usage().values())
        with self.lock:
            booked = sum(self.reserved.values())
            if used + booked + nbytes > self.max_disk_bytes:
                raise QuotaError(
                    f"not enough room for this upload: the jobs folder holds {human_size(used + booked)} of the "
                    f"{human_size(self.max_disk_bytes)} allowed (emolens serve --max-jobs-disk-gb) and this upload "
                    f"may need {human_size(nbytes)}; finished jobs are removed oldest first, but the rest are "
                    "queued, running or still uploading: delete jobs (DELETE /api/jobs/{id}) or try again later")
            self.reserved[job_id] = nbytes

    def release(self, job_id: str) -> None:
        """End the booking of :meth:`reserve` (the upload is on disk now, or gone)."""
        with self.lock:
            self.reserved.pop(job_id, None)

    def delete(self, job_id: str) -> None:
        """Forget a job and remove its folder (a running job stops at its next frame, then goes)."""
        with self.lock:
            job = self.jobs.pop(job_id)
            job.cancel = True
            running = job.status == "running"
        if not running:
            shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def result_path(self, job_id: str, name: str) -> Path:
        """Path of a downloadable result of a finished job (``name`` from :data:`RESULT_FILES`)."""
        return self.folder(job_id) / "out" / RESULT_FILES[name][0]

    # -- the worker -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._work, name="emolens-jobs", daemon=True)
            self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker (a running job is cancelled and marked failed)."""
        self.stopping.set()
        with self.lock:
            for job in self.jobs.values():
                if job.status == "running":
                    job.cancel = True
        if self.thread is not None:
            self.thread.join(timeout)
            self.thread = None

    def _work(self) -> None:
        if self.thread_init is not None:
            self.thread_init()
        while not self.stopping.is_set():
            if time.monotonic() - self._last_prune > PRUNE_INTERVAL_S:
                self.prune()
            try:
                job_id = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            with self.lock:
                job = self.jobs.get(job_id)
                if job is None or job.status != "queued":
                    continue
                job.status, job.started = "running", time.time()
                self._save(job)
            try:
                self._run(job)
                job.status = "done"
            except JobCancelled:
                job.status, job.error = "failed", "cancelled"
            except Exception as exc:  # noqa: BLE001  (a bad video fails its job, never the worker)
                job.status, job.error = "failed", api_message(f"{type(exc).__name__}: {exc}")
            job.finished = time.time()
            with self.lock:
                deleted = job.id not in self.jobs
            if deleted:
                shutil.rmtree(self.folder(job.id), ignore_errors=True)
            else:
                make_private(self.folder(job.id))
                self._save(job)
                self.prune()

    def _run(self, job: Job) -> None:
        from emolens.video import VideoAnalyzer, VideoOptions

        folder = self.folder(job.id)
        if not (folder / "out").is_dir():
            make_private_dir(folder / "out")
        options = dict(job.options)
        annotate = bool(options.pop("annotate", True))
        options.setdefault("device", self.device)
        analyzer = VideoAnalyzer(VideoOptions(**options), self.model)

        def progress(done: int, total: int | None) -> None:
            job.frames_done = done

        summary = analyzer.run(folder / job.input_name, folder / "out", stem=STEM, annotate=annotate,
                               on_frame=progress, cancel=lambda: job.cancel)
        if job.cancel or summary["cancelled"]:
            raise JobCancelled(job.id)
        if summary.get("error"):
            job.error = api_message(summary["error"])
        job.voice = summary["voice"]  # the sound track, analysed once by the run above

    # -- results ----------------------------------------------------------------------------------
    def summary(self, job: Job) -> dict:
        """The video summary of a finished job, with server paths replaced by the job's URLs."""
        path = self.result_path(job.id, "summary.json")
        summary = json.loads(path.read_text(encoding="utf-8"))
        summary["source"] = job.filename
        summary["outputs"] = {name: f"/api/jobs/{job.id}/files/{name}" for name in RESULT_FILES
                              if self.result_path(job.id, name).is_file()}
        summary.pop("model", None)
        if job.voice is not None:
            summary["voice"] = job.voice
        return summary

    def timeline(self, job: Job, max_points: int = 600) -> dict:
        """Per-track emotion probabilities over time from the frames CSV (at most ``max_points``
        points per track): ``{"labels", "tracks": [{"track_id", "time_s", "label", "probs": {..}}]}``."""
        path = self.result_path(job.id, "frames.csv")
        tracks: dict[int, dict] = {}
        labels: list[str] = []
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                # face probabilities only (p_<class>); the fusion columns p_voice_*/p_fused_* are separate groups
                labels = [c[2:] for c in reader.fieldnames or []
                          if c.startswith("p_") and not c.startswith(("p_voice_", "p_fused_"))]
                for row in reader:
                    t = tracks.setdefault(int(row["track_id"]), {"time_s": [], "label": [],
                                                                 "probs": {n: [] for n in labels}})
                    t["time_s"].append(float(row["time_s"]))
                    t["label"].append(row["label"])
                    for n in labels:
                        t["probs"][n].append(float(row[f"p_{n}"]))
        out = []
        for tid in sorted(tracks):
            t = tracks[tid]
            step = max(1, math.ceil(len(t["time_s"]) / max_points))
            out.append({"track_id": tid, "time_s": t["time_s"][::step], "label": t["label"][::step],
                        "probs": {n: [round(v, 4) for v in vals[::step]] for n, vals in t["probs"].items()}})
        return {"labels": labels, "tracks": out}
