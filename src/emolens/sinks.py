"""Where the frame loop's results go: one small interface, one class per output.

A sink is opened once the face labels and the extra probability groups are known
(``open(labels, groups, fps)``), gets every analysed frame (``write(result)``: a
:class:`~emolens.tracked.FrameResult` whose faces carry their fusion values), and is closed at
the end, also after an error or a cancel (``close() -> {kind: path}`` of what it wrote).
:meth:`emolens.video.VideoAnalyzer.analyse` drives them; nothing here grows with the length of
the input except :class:`FrameCollector` (the in-memory table of the Python API).

Sinks by name (:data:`SINKS`, used by ``VideoAnalyzer.run``, ``emolens video --format`` and
:meth:`emolens.recordings.VideoResult.save`):

* ``csv``: ``<stem>.frames.csv`` (:class:`CsvSink`, rows flushed after every frame);
* ``parquet``: ``<stem>.frames.parquet`` (:class:`ParquetSink`, written directly with pyarrow in
  row groups of ``row_group_frames`` frames; the CSV's columns, values and dtypes);
* ``mp4``: ``<stem>.annotated.mp4`` (:class:`AnnotatedVideoSink`);
* ``png``: ``<stem>.timeline.png`` (:class:`TimelineSink`, a bounded per-track series).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from emolens.fusion import FUSION_LABELS
from emolens.outputs import (
    FRAME_COLUMNS,
    LANDMARK_COLUMNS,
    FrameCsvWriter,
    Row,
    VideoWriter,
    frame_columns,
    frame_rows,
)
from emolens.tracked import FrameResult

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


class FrameSink(Protocol):
    """One output of the frame loop: ``open``, ``write`` one frame, ``close`` -> paths written."""

    def open(self, labels: tuple[str, ...], groups: tuple[str, ...], fps: float) -> None:
        """Start (called once, before the first frame): face labels, extra probability groups
        (``("voice", "fused")`` when the input has speech), frames per second of the analysed frames."""

    def write(self, result: FrameResult) -> None:
        """Take one analysed frame."""

    def close(self) -> dict[str, Path]:
        """Finish (called once, also after an error or a cancel); ``{kind: path}`` of the files written."""


class FileSink:
    """Base of the sinks that write one file ``<out_dir>/<stem><suffix>``."""

    name: ClassVar[str] = ""  #: registry name (``--format``)
    kind: ClassVar[str] = ""  #: key in ``summary["outputs"]``
    suffix: ClassVar[str] = ""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def at(cls, out_dir: str | os.PathLike, stem: str, **options: Any) -> FileSink:
        """The sink writing ``<out_dir>/<stem><suffix>`` (``options``: the sink's own settings)."""
        return cls(Path(out_dir) / f"{stem}{cls.suffix}", **options)

    def open(self, labels: tuple[str, ...], groups: tuple[str, ...], fps: float) -> None:
        """See :class:`FrameSink`."""
        raise NotImplementedError

    def write(self, result: FrameResult) -> None:
        """See :class:`FrameSink`."""
        raise NotImplementedError

    def close(self) -> dict[str, Path]:
        """See :class:`FrameSink`."""
        raise NotImplementedError

    def discard(self) -> None:
        """Remove what was written (the input turned out to be unreadable)."""
        self.path.unlink(missing_ok=True)


class CsvSink(FileSink):
    """``<stem>.frames.csv`` (see :class:`~emolens.outputs.FrameCsvWriter`)."""

    name, kind, suffix = "csv", "frames_csv", ".frames.csv"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self.writer: FrameCsvWriter | None = None

    def open(self, labels: tuple[str, ...], groups: tuple[str, ...], fps: float) -> None:
        """Create the file and write its header."""
        self.writer = FrameCsvWriter(self.path, labels, groups)

    def write(self, result: FrameResult) -> None:
        """Append the frame's rows (flushed)."""
        if self.writer is not None:
            self.writer.write(result)

    def close(self) -> dict[str, Path]:
        """Close the file."""
        if self.writer is None:
            return {}
        self.writer.close()
        return {self.kind: self.path}


def _arrow_schema(columns: list[str]) -> Any:
    """The pyarrow schema of a frames table: what ``pandas.read_csv`` makes of the CSV (int64
    for the integer and 0/1 columns, string ``label``, float64 for the rest)."""
    import pyarrow as pa

    ints = {"frame", "track_id", "x", "y", "w", "h", "detected", "classified"}
    return pa.schema([(c, pa.int64() if c in ints else pa.string() if c == "label" else pa.float64())
                      for c in columns])


def require_pyarrow() -> None:
    """RuntimeError with the install hint when pyarrow is missing."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise RuntimeError("parquet output needs pyarrow: pip install 'emolens[parquet]'") from None


class ParquetSink(FileSink):
    """``<stem>.frames.parquet``: the rows of the frames CSV (same columns, values and dtypes as
    ``pandas.read_csv`` gives for the CSV), written with a ``pyarrow.parquet.ParquetWriter`` one
    row group per ``row_group_frames`` analysed frames, so memory stays flat on long inputs."""

    name, kind, suffix = "parquet", "frames_parquet", ".frames.parquet"

    def __init__(self, path: str | os.PathLike, row_group_frames: int = 500) -> None:
        require_pyarrow()
        super().__init__(path)
        self.row_group_frames = max(1, int(row_group_frames))
        self.writer: Any = None
        self.rows: list[Row] = []
        self.frames = 0
        self.columns: list[str] = []
        self.labels: tuple[str, ...] = ()
        self.groups: tuple[str, ...] = ()
        self.schema: Any = None

    def open(self, labels: tuple[str, ...], groups: tuple[str, ...], fps: float) -> None:
        """Create the file (its schema from the labels and groups)."""
        import pyarrow.parquet as pq

        self.labels, self.groups = labels, groups
        self.columns = frame_columns(labels, groups)
        self.schema = _arrow_schema(self.columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(str(self.path), self.schema)

    def write(self, result: FrameResult) -> None:
        """Buffer the frame's rows; every ``row_group_frames`` frames they go to the file."""
        self.rows += frame_rows(result, self.labels, self.groups)
        self.frames += 1
        if self.frames % self.row_group_frames == 0:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one row group."""
        import pyarrow as pa

        if self.writer is None or not self.rows:
            return
        cols = list(zip(*self.rows, strict=True))
        arrays = [pa.array([None if v is None else int(v) for v in col], pa.int64()) if field.type == pa.int64()
                  else pa.array(col, field.type) for col, field in zip(cols, self.schema, strict=True)]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.rows = []

    def close(self) -> dict[str, Path]:
        """Write the last rows and finish the file (an empty table when no face was found)."""
        if self.writer is None:
            return {}
        try:
            self.flush()
        finally:
            self.writer.close()
            self.writer = None
        return {self.kind: self.path}


class AnnotatedVideoSink(FileSink):
    """``<stem>.annotated.mp4``: every analysed frame with its faces drawn (fused labels during speech)."""

    name, kind, suffix = "mp4", "annotated_mp4", ".annotated.mp4"

    def __init__(self, path: str | os.PathLike, bars: bool = True) -> None:
        super().__init__(path)
        self.bars = bars
        self.video: VideoWriter | None = None

    def open(self, labels: tuple[str, ...], groups: tuple[str, ...], fps: float) -> None:
        """Start the encoder."""
        self.video = VideoWriter(self.path, fps=fps)

    def write(self, result: FrameResult) -> None:
        """Draw and encode one frame."""
        from emolens.outputs import draw_tracked  # looked up per call: the drawing can be swapped (tests)

        if self.video is not None:
            self.video.write(draw_tracked(result.frame.image, [f.shown(FUSION_LABELS) for f in result.faces],
                                          self.bars))

    def close(self) -> dict[str, Path]:
        """Finish the file (removed when no frame was written)."""
        if self.video is None:
            return {}
        frames = self.video.frames
        self.video.close()
        return {self.kind: self.path} if frames else {}


class TimelineSink(FileSink):
    """``<stem>.timeline.png``: each person's emotions over time (see
    :func:`emolens.outputs.timeline_figure`), written at the end from a compact per-track series:
    every track keeps at most ``max_points`` points (when it has more, every other one is dropped
    and the track samples half as often), so memory stays bounded however long the input."""

    name, kind, suffix = "png", "timeline_png", ".timeline.png"

    def __init__(self, path: str | os.PathLike, title: str | None = None, max_tracks: int = 12,
                 max_points: int = 1000) -> None:
        super().__init__(path)
        self.title = title if title is not None else self.path.name.removesuffix(self.suffix)
        self.max_tracks, self.max_points = max_tracks, max(2, max_points)
        self.labels: tuple[str, ...] = ()
        self.groups: tuple[str, ...] = ()
        self.series: dict[int, list[tuple[float, ...]]] = {}
        self.step: dict[int, int] = {}  # keep every step-th frame of a track
        self.seen: dict[int, int] = {}  # frames of each track so far

    def open(self, labels: tuple[str, ...], groups: tuple[str, ...], fps: float) -> None:
        """Remember the labels and groups."""
        self.labels, self.groups = labels, groups

    def write(self, result: FrameResult) -> None:
        """Add the frame's faces to their tracks' series."""
        n = len(self.labels)
        for f in result.faces:
            tid = f.track_id
            k = self.seen.get(tid, 0)
            self.seen[tid] = k + 1
            if k % self.step.setdefault(tid, 1):
                continue
            values = [float(f.probs.get(name, 0.0)) for name in self.labels]
            for g in self.groups:
                vec = f.fusion.group(g) if f.fusion is not None else None
                values += [math.nan] * n if vec is None else [float(v) for v in vec]
            points = self.series.setdefault(tid, [])
            points.append((result.frame.time_s, *values))
            if len(points) >= self.max_points:
                self.series[tid] = points[::2]
                self.step[tid] *= 2

    def table(self) -> pd.DataFrame:
        """The kept points as a frames-like table (``time_s, track_id, p_...``) of the longest tracks."""
        import pandas as pd

        keep = sorted(self.seen, key=lambda t: -self.seen[t])[: self.max_tracks]
        probs = frame_columns(self.labels, self.groups)[len(FRAME_COLUMNS):]
        rows = [(tid, *point) for tid in keep for point in self.series.get(tid, [])]
        return pd.DataFrame.from_records(rows, columns=["track_id", "time_s", *probs])

    def close(self) -> dict[str, Path]:
        """Draw and save the figure (nothing when no face was found)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from emolens.outputs import timeline_figure

        table = self.table()
        self.series = {}
        if table.empty:
            return {}
        fig = timeline_figure(table, self.title, self.max_tracks)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.path, dpi=100)
        plt.close(fig)
        return {self.kind: self.path}


#: File sinks by name: ``csv``, ``parquet``, ``mp4`` (annotated video), ``png`` (timeline).
SINKS: dict[str, type[FileSink]] = {s.name: s for s in (CsvSink, ParquetSink, AnnotatedVideoSink, TimelineSink)}


def make_sinks(formats: list[str] | tuple[str, ...], out_dir: str | os.PathLike, stem: str,
               options: dict[str, dict[str, Any]] | None = None) -> list[FileSink]:
    """The sinks of ``formats`` (names of :data:`SINKS`) writing ``<out_dir>/<stem>...``;
    ``options``: per name, keyword arguments of that sink (e.g. ``{"mp4": {"bars": False}}``).
    Raises ValueError for an unknown name."""
    unknown = [f for f in formats if f not in SINKS]
    if unknown:
        raise ValueError(f"unknown output format(s) {', '.join(map(repr, unknown))} ({', '.join(SINKS)})")
    options = options or {}
    return [SINKS[f].at(out_dir, stem, **options.get(f, {})) for f in dict.fromkeys(formats)]


class FrameCollector:
    """A sink that keeps the rows of the frames CSV in memory (the Python API's
    :func:`emolens.analyze_video`): the CSV's columns and rounding, empty cells NaN, ``detected``
    and ``classified`` as booleans. Memory grows with the number of rows: for long inputs use
    file sinks or :func:`emolens.stream`."""

    def __init__(self) -> None:
        self.columns: list[str] = []
        self.labels: tuple[str, ...] = ()
        self.groups: tuple[str, ...] = ()
        self.rows: list[Row] = []

    def open(self, labels: tuple[str, ...], groups: tuple[str, ...], fps: float) -> None:
        """Set the columns: those of the frames CSV."""
        self.labels, self.groups = labels, groups
        self.columns = frame_columns(labels, groups)

    def write(self, result: FrameResult) -> None:
        """Keep the frame's rows (empty cells as NaN)."""
        for row in frame_rows(result, self.labels, self.groups):
            self.rows.append(tuple(math.nan if v is None else v for v in row))

    def close(self) -> dict[str, Path]:
        """Nothing to release, no file."""
        return {}

    @property
    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (an empty one with the columns when no face was found)."""
        import pandas as pd

        table = pd.DataFrame.from_records(self.rows, columns=self.columns)
        floats = {c: float for c in (*LANDMARK_COLUMNS, *self.columns[len(FRAME_COLUMNS):])}
        return table.astype({"time_s": float, "frame": int, "track_id": int, "x": int, "y": int, "w": int, "h": int,
                             "score": float, "detected": bool, "classified": bool, "evidence": float, **floats})


def write_table_parquet(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """A frames table (e.g. :attr:`emolens.recordings.VideoResult.frames`) as Parquet with
    :class:`ParquetSink`'s schema."""
    require_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = table.astype({c: np.int64 for c in ("detected", "classified") if c in table})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(table, schema=_arrow_schema(list(table.columns)), preserve_index=False),
                   str(path))
