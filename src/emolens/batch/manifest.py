"""``DIR/manifest.csv``: one row per finished input (a :class:`~emolens.batch.jobs.JobResult`),
rewritten atomically after each one; what a rerun reads to skip finished inputs."""

from __future__ import annotations

# Only the standard library at module level (see emolens.batch.engines).
import csv
import os
from pathlib import Path

from emolens.batch.jobs import Job, JobResult

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("input", "status", "error", "seconds", "frames", "outputs", "kind", "stem", "finished")


class Manifest:
    """``DIR/manifest.csv``: the finished inputs of every run into ``DIR`` (keyed by input)."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / MANIFEST
        self.rows: dict[str, JobResult] = {}
        if self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    if row.get("input"):
                        self.rows[row["input"]] = JobResult.from_row(row)

    def stems(self) -> dict[str, str]:
        """input -> stem of every input seen before."""
        return {k: r.stem for k, r in self.rows.items() if r.stem}

    def done(self, job: Job) -> JobResult | None:
        """The earlier result when ``job`` finished ``ok`` and all its outputs still exist."""
        r = self.rows.get(job.input)
        if r is None or r.status != "ok" or r.stem != job.stem or not r.outputs:
            return None
        return r if all((self.out_dir / p).exists() for p in r.outputs) else None

    def record(self, result: JobResult) -> None:
        """Add or replace one input's row and rewrite the file (temp file + rename)."""
        self.rows[result.input] = result
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(r.row() for r in self.rows.values())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
