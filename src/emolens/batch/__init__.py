"""Batch runs: many photos, videos and audio files, on a local process pool or a Ray cluster.

>>> from emolens.batch import BatchSettings, discover_inputs, run_batch
>>> report = run_batch(discover_inputs(["interviews/"]), "out/", BatchSettings(), engine="local")
>>> [(r.input, r.status, r.frames) for r in report.results]

Layout of the output folder ``DIR``:

* ``DIR/<stem>/``: the outputs of one input, as the single-file commands write them: for a
  video ``<stem>.frames.csv``, ``<stem>.summary.json``, ``<stem>.annotated.mp4`` (and
  ``<stem>.timeline.png`` with ``plot``); for a photo ``<stem>.json`` (the ``emolens image
  --json`` shape) and ``<stem>.annotated.jpg``; for audio ``<stem>.audio.json`` (the ``emolens
  audio --json`` shape). ``<stem>`` is the file name without its suffix, made unique within the
  run (``x``, ``x.png``, ``x-2``...) and kept from one run to the next;
* ``DIR/frames/input=<stem>/part-0.parquet``: one Parquet dataset of the face rows of every video
  and photo (the columns of the frames CSV, plus ``kind``), partitioned by input:
  ``pandas.read_parquet("DIR/frames")`` reads it with an ``input`` column;
* ``DIR/segments/input=<stem>/part-0.parquet``: the speech segments of every audio input
  (``start_s, end_s, label, p_<class>``);
* ``DIR/manifest.csv``: one row per finished input (``input, status, error, seconds, frames,
  outputs, kind, stem, finished``), rewritten atomically after each one;
* ``DIR/batch.json``: the settings the finished outputs were made with (a rerun with other
  settings says so, and keeps its finished inputs unless ``redo``).

A rerun skips the inputs whose status is ``ok`` and whose outputs all exist, and retries the
others. One input that fails (unreadable, corrupt, unsupported) gets ``status=failed`` and its
message; the others still run.

Modules: :mod:`~emolens.batch.inputs` (discovery, kinds, stems), :mod:`~emolens.batch.manifest`,
:mod:`~emolens.batch.worker` (the per-input job), :mod:`~emolens.batch.dataset` (the Parquet
datasets), :mod:`~emolens.batch.engines` (process pool, Ray); here the driver, :func:`run_batch`.
"""

from __future__ import annotations

# Only the standard library at module level (see emolens.batch.engines).
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emolens.batch.engines import ENGINES, local_results, ray_available, ray_results
from emolens.batch.inputs import KINDS, discover_inputs, input_kind, plan_jobs, read_input_list
from emolens.batch.jobs import BatchSettings, Job, JobResult, now
from emolens.batch.lock import FolderBusy as FolderBusy
from emolens.batch.lock import folder_lock
from emolens.batch.manifest import MANIFEST, MANIFEST_COLUMNS, Manifest
from emolens.batch.worker import BatchWorker

__all__ = [
    "ENGINES", "KINDS", "MANIFEST", "MANIFEST_COLUMNS", "BatchReport", "BatchSettings", "BatchWorker", "Job",
    "JobResult", "Manifest", "discover_inputs", "input_kind", "local_results", "plan_jobs", "ray_available",
    "ray_results", "read_input_list", "results_table", "run_batch",
]


@dataclass
class BatchReport:
    """The inputs of one run, in input order (``skipped``: done by an earlier run)."""

    out_dir: Path
    results: list[JobResult]
    seconds: float
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    not_run: int = 0  #: inputs left when the run was interrupted

    def count(self, status: str) -> int:
        """How many inputs have this status."""
        return sum(r.status == status for r in self.results)

    @property
    def frames(self) -> int:
        """Video frames analysed in this run."""
        return sum(r.frames for r in self.results if r.status != "skipped")


def _size(job: Job) -> int:
    try:
        return os.path.getsize(job.input)
    except OSError:
        return 0


def _settings_note(out_dir: Path, settings: BatchSettings) -> str | None:
    path = out_dir / "batch.json"
    try:
        before = json.loads(path.read_text(encoding="utf-8")).get("settings")
    except (OSError, ValueError):
        return None
    if before is not None and before != json.loads(json.dumps(settings.to_dict())):
        return (f"the settings differ from an earlier run into {out_dir}: inputs it finished are kept "
                "(--redo analyses everything again)")
    return None


def run_batch(
    inputs: Sequence[str],
    out_dir: str | os.PathLike,
    settings: BatchSettings | None = None,
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    redo: bool = False,
    progress: bool = False,
) -> BatchReport:
    """Analyse ``inputs`` (see :func:`discover_inputs`) into ``out_dir`` on ``engine`` (``local``:
    a process pool of ``workers`` processes, default one per core; ``ray``: Ray actors, on the
    cluster at ``address`` or a local Ray). Inputs finished by an earlier run are skipped (all
    of them redone with ``redo``); the manifest is rewritten after every finished input.
    ``progress``: one tqdm bar (inputs done, frames/s). Ctrl-C stops the run: the report has
    ``interrupted`` set and the manifest keeps every finished input. Raises ``ValueError`` for bad
    settings (:class:`~emolens.device.DeviceError` for a device this machine cannot use) before any
    input starts, and :class:`FolderBusy` (a ``ValueError``) when another run is writing into
    ``out_dir``."""
    from emolens.device import check_device, providers_for
    from emolens.expression import resolve_model

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} ({', '.join(ENGINES)})")
    if workers is not None and workers < 1:
        raise ValueError("workers must be >= 1")
    if address and engine != "ray":
        raise ValueError("an address is only used by the ray engine")
    settings = settings or BatchSettings()
    from emolens.video import VideoOptions

    VideoOptions(**settings.video)  # bad options fail here, not once per input
    from emolens.expression import available_models

    resolve_model(settings.model)  # an unknown model fails here, not once per input
    check_device(settings.device)
    if not address:  # this machine runs the models: cuda without it fails here (a cluster's nodes may differ)
        providers_for(settings.device)
    if settings.model not in available_models():  # a file: workers may run elsewhere (names resolve there)
        settings.model = os.path.abspath(settings.model)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        return _run_locked(inputs, out, settings, engine, workers, address, redo, progress)


def _run_locked(inputs: Sequence[str], out: Path, settings: BatchSettings, engine: str, workers: int | None,
                address: str | None, redo: bool, progress: bool) -> BatchReport:
    """:func:`run_batch` once the output folder's lock is held."""
    from tqdm import tqdm

    manifest = Manifest(out)
    notes: list[str] = []
    note = None if redo else _settings_note(out, settings)
    if note:
        notes.append(note)
    else:  # batch.json keeps the settings of the finished outputs while they differ (the note repeats)
        from emolens.outputs import write_json

        write_json({"settings": settings.to_dict(), "engine": engine, "workers": workers, "address": address,
                    "started": now()}, out / "batch.json")
    jobs = plan_jobs(inputs, manifest.stems())
    order = {j.input: i for i, j in enumerate(jobs)}
    results: dict[str, JobResult] = {}
    todo = []
    for job in jobs:
        earlier = None if redo else manifest.done(job)
        if earlier is not None:
            results[job.input] = JobResult(**{**asdict(earlier), "status": "skipped"})
        else:
            todo.append(job)
    start = time.perf_counter()
    frames = 0
    interrupted = False
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="input", desc="batch", disable=not progress,
               dynamic_ncols=True)
    if todo:
        todo.sort(key=_size, reverse=True)  # largest first: the last inputs to finish are short ones
        if engine == "local":
            stream = local_results(todo, settings, out, min(workers or os.cpu_count() or 1, len(todo)))
        else:
            stream = ray_results(todo, settings, out, workers, address, notes)
        try:
            for result in stream:
                manifest.record(result)
                results[result.input] = result
                frames += result.frames
                elapsed = time.perf_counter() - start
                failed = sum(r.status == "failed" for r in results.values())
                bar.set_postfix_str(f"{frames / elapsed:.1f} frames/s, {failed} failed", refresh=False)
                bar.update()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            stream.close()
            bar.close()
    else:
        bar.close()
    ordered = sorted(results.values(), key=lambda r: order[r.input])
    return BatchReport(out, ordered, round(time.perf_counter() - start, 3), interrupted, notes,
                       len(jobs) - len(ordered))


def results_table(report: BatchReport) -> str:
    """The final table (input, status, seconds, frames) and a totals line."""
    lines = [f"{'input':<40} {'status':<8} {'seconds':>8} {'frames':>7}  error"]
    for r in report.results:
        name = Path(r.input).name or r.input
        name = name if len(name) <= 40 else name[:37] + "..."
        lines.append(f"{name:<40} {r.status:<8} {r.seconds:>8.2f} {r.frames:>7}  {r.error[:120]}")
    fps = report.frames / report.seconds if report.seconds > 0 else 0.0
    total = len(report.results) + report.not_run
    lines.append(f"{total} input(s): {report.count('ok')} ok, {report.count('failed')} failed, "
                 f"{report.count('skipped')} skipped (done before)"
                 + (f", {report.not_run} not run (interrupted)" if report.not_run else "")
                 + f"; {report.frames} frames in {report.seconds:.1f} s ({fps:.1f} frames/s)")
    return "\n".join(lines)
