"""What a batch run hands around: its settings, one input (:class:`Job`) and how it went
(:class:`JobResult`, also one row of the manifest)."""

from __future__ import annotations

# Only the standard library at module level (see emolens.batch.engines).
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any


@dataclass
class BatchSettings:
    """What each input gets: the ``emolens video`` options for videos (``video``: the
    :class:`~emolens.video.VideoOptions` fields as a dict), the face ``model``, and which files
    to write."""

    video: dict[str, Any] = field(default_factory=dict)
    model: str = "default"
    annotate: bool = True
    bars: bool = True
    plot: bool = False
    parquet: bool = True
    max_pixels: int | None = 80_000_000  #: photos larger than this are refused (see emolens.media)
    vad: str = "auto"  #: voice activity detection of audio inputs (see ``emolens audio --vad``)
    threads: int = 1  #: intra-op threads of each worker's models (1: one process per core does the scaling)
    device: str = "cpu"  #: where the workers' models run: cpu, cuda or auto (see emolens.device)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True)
class Job:
    """One input: its path (or URL), ``kind`` (video, photo, audio) and unique output ``stem``."""

    input: str
    kind: str
    stem: str


@dataclass
class JobResult:
    """How one input went; ``outputs`` are paths relative to the output folder."""

    input: str
    kind: str
    stem: str
    status: str  #: ok, failed or skipped (done by an earlier run)
    error: str = ""
    seconds: float = 0.0
    frames: int = 0  #: analysed video frames (1 for a photo, 0 for audio)
    outputs: list[str] = field(default_factory=list)
    finished: str = ""  #: UTC time the input finished (ISO 8601)

    def row(self) -> dict[str, str]:
        """The manifest row."""
        return {"input": self.input, "status": self.status, "error": self.error, "seconds": f"{self.seconds:.3f}",
                "frames": str(self.frames), "outputs": ";".join(self.outputs), "kind": self.kind,
                "stem": self.stem, "finished": self.finished}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> JobResult:
        """Read a manifest row back."""
        def number(key: str, cast: Callable[[str], Any]) -> Any:
            try:
                return cast(row.get(key) or 0)
            except ValueError:
                return cast(0)

        return cls(row.get("input", ""), row.get("kind", ""), row.get("stem", ""), row.get("status", ""),
                   row.get("error", "") or "", number("seconds", float), number("frames", int),
                   [p for p in (row.get("outputs") or "").split(";") if p], row.get("finished", "") or "")



def now() -> str:
    """The current UTC time, ISO 8601 (``finished`` of a result)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
