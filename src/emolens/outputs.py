"""Writers and drawings: JSON files, tables, annotated images; frame CSVs, timelines, annotated videos."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emolens.annotate import COLORS, FaceMark, draw_faces

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

    from emolens.api import FaceResult, ImageResult
    from emolens.tracked import FrameResult, TrackedFace


def write_json(obj: object, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented UTF-8 JSON, creating parent folders (atomic replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def unique_stem(stem: str, suffix: str, used: set[str]) -> str:
    """``stem``, or ``stem.ext`` / ``stem-2``... when already in ``used`` (which gets the result).

    Keeps the outputs of inputs that share a name (``a/x.png``, ``b/x.png``) from overwriting each other.
    """
    if stem in used:
        ext = suffix.lstrip(".")
        stem = f"{stem}.{ext}" if ext and f"{stem}.{ext}" not in used else stem
        base, i = stem, 2
        while stem in used:
            stem, i = f"{base}-{i}", i + 1
    used.add(stem)
    return stem


def annotate_image(image: np.ndarray, faces: Sequence[FaceResult], bars: bool = True) -> np.ndarray:
    """A copy of a BGR image with every face drawn on it (labels and panels placed without overlaps)."""
    return draw_faces(image.copy(), [FaceMark(f.face.box, f.label, f.probs) for f in faces], bars=bars)


def faces_table(results: Sequence[ImageResult]) -> str:
    """Plain-text table of :class:`~emolens.api.ImageResult` values (one row per face)."""
    lines = [f"{'file':<40} {'face':>4}  {'box (x,y,w,h)':<22} {'label':<9} {'prob':>5}  top-2"]
    for r in results:
        name = Path(r.path).name if r.path else "<array>"
        if r.error:
            lines.append(f"{name:<40}  ERROR: {r.error}")
            continue
        if not r.faces:
            lines.append(f"{name:<40}  no face found")
        for i, f in enumerate(r.faces):
            top = sorted(f.probs.items(), key=lambda kv: -kv[1])
            box = ",".join(str(v) for v in f.box)
            second = f"{top[1][0]} {top[1][1]:.2f}" if len(top) > 1 else ""
            lines.append(f"{name:<40} {i:>4}  {box:<22} {f.label:<9} {top[0][1]:>5.2f}  {second}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Video outputs: frames table rows, per-frame CSV (written as we go), timeline plot, annotated video.
# --------------------------------------------------------------------------------------------

#: Landmark columns: right eye, left eye, nose, mouth right, mouth left (as seen), x and y in pixels.
LANDMARK_COLUMNS: tuple[str, ...] = tuple(
    f"{name}_{axis}" for name in ("eye_r", "eye_l", "nose", "mouth_r", "mouth_l") for axis in ("x", "y")
)
FRAME_COLUMNS: tuple[str, ...] = (
    "time_s", "frame", "track_id", "x", "y", "w", "h", "score", "detected", "classified", "evidence",
    *LANDMARK_COLUMNS, "label",
)


#: Decimal places of the float columns of a frames table (CSV text and Parquet values alike).
DIGITS = {"time_s": 3, "score": 3, "evidence": 3, "landmark": 1, "prob": 4}


def frame_columns(labels: Sequence[str], groups: Sequence[str] = ()) -> list[str]:
    """Columns of a frames table: :data:`FRAME_COLUMNS`, ``p_<class>`` and ``p_<group>_<class>``
    for each extra probability group (``voice``, ``fused``)."""
    return [*FRAME_COLUMNS, *(f"p_{n}" for n in labels), *(f"p_{g}_{n}" for g in groups for n in labels)]


def frame_digits(labels: Sequence[str], groups: Sequence[str] = ()) -> list[int | None]:
    """Decimal places per column of :func:`frame_columns` (None: not a float column)."""
    head: list[int | None] = [DIGITS["time_s"], None, None, None, None, None, None, DIGITS["score"], None, None,
                              DIGITS["evidence"], *([DIGITS["landmark"]] * len(LANDMARK_COLUMNS)), None]
    return [*head, *([DIGITS["prob"]] * (len(labels) * (1 + len(groups))))]


Row = tuple[float | int | bool | str | None, ...]


def frame_rows(result: FrameResult, labels: Sequence[str], groups: Sequence[str] = ()) -> list[Row]:
    """One row per face of an analysed frame, in :func:`frame_columns` order, floats rounded as
    :data:`DIGITS` says; ``None`` for an empty cell (no landmarks, no speech at that moment)."""
    t, index = round(result.frame.time_s, DIGITS["time_s"]), result.frame.index
    rows: list[Row] = []
    for f in result.faces:
        x, y, w, h = (int(round(float(v))) for v in f.face.box)
        marks = f.face.landmarks
        points: list[float | None] = ([None] * len(LANDMARK_COLUMNS) if marks is None else
                                      [round(float(v), DIGITS["landmark"]) for v in np.asarray(marks).reshape(-1)[:10]])
        more: list[float | None] = []
        for g in groups:
            vec = f.fusion.group(g) if f.fusion is not None else None
            more += [None] * len(labels) if vec is None else [round(float(v), DIGITS["prob"]) for v in vec]
        rows.append((t, index, f.track_id, x, y, w, h, round(float(f.face.score), DIGITS["score"]), bool(f.detected),
                     bool(f.classified), round(float(f.evidence), DIGITS["evidence"]), *points, f.label,
                     *(round(float(f.probs.get(n, 0.0)), DIGITS["prob"]) for n in labels), *more))
    return rows


class FrameCsvWriter:
    """``<stem>.frames.csv``: one row per face per analysed frame, flushed after every frame, so
    rows already computed survive a crash, a decode error or Ctrl-C.

    Columns (:func:`frame_columns`): ``time_s, frame, track_id, x, y, w, h, score``; ``detected``
    (1: found by the detector in this frame, 0: box carried by the tracker), ``classified`` (1: the
    model ran on this frame, 0: probabilities reused from the track's last classification),
    ``evidence`` (the face's weight in the video decision), the 5 landmarks (``eye_r_x ...
    mouth_l_y``; empty when the detector gives none), ``label``, ``p_<class>...``, and
    ``p_<group>_<class>`` per extra group (``voice``, ``fused``: empty while nobody speaks).
    """

    def __init__(self, path: str | os.PathLike, labels: Sequence[str], extra: Sequence[str] = ()) -> None:
        import csv

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.labels = tuple(labels)
        self.extra = tuple(extra)  # more probability groups, e.g. ("voice", "fused") -> p_voice_<class>...
        self._digits = frame_digits(self.labels, self.extra)
        self._file = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.writer(self._file)
        self._csv.writerow(frame_columns(self.labels, self.extra))
        self._file.flush()
        self.rows = 0

    def _cell(self, value: float | int | bool | str | None, digits: int | None) -> float | int | str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return int(value)
        if digits is not None:
            return f"{value:.{digits}f}"
        return value

    def write(self, result: FrameResult) -> None:
        """Write one frame's faces (their :class:`~emolens.tracked.FusedFace` fills the extra
        groups; a face without one, or without speech then, leaves those cells empty)."""
        for row in frame_rows(result, self.labels, self.extra):
            self._csv.writerow([self._cell(v, d) for v, d in zip(row, self._digits, strict=True)])
            self.rows += 1
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> FrameCsvWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plot_timeline(csv_path: str | os.PathLike, png_path: str | os.PathLike, title: str | None = None,
                  max_tracks: int = 12) -> bool:
    """PNG of each person's emotions over time: one panel per track (the longest ``max_tracks``).

    The face probabilities are a stacked area; when the CSV has voice/fused columns, two strips
    under each panel show the voice's and the fused decision's label over time (colour = class).
    One legend for the whole figure, outside the panels. Returns False (and writes nothing) when
    the CSV has no rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    table = pd.read_csv(csv_path)
    if table.empty:
        return False
    fig = timeline_figure(table, title, max_tracks)
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return True


def timeline_figure(table: pd.DataFrame, title: str | None = None, max_tracks: int = 12) -> Figure:
    """The matplotlib figure of :func:`plot_timeline` for a frames table (one row per face per frame)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    groups = [g for g in ("voice", "fused") if any(c.startswith(f"p_{g}_") for c in table.columns)]
    classes = [c[2:] for c in table.columns
               if c.startswith("p_") and not any(c.startswith(f"p_{g}_") for g in groups)]
    counts = table["track_id"].value_counts()
    tracks = sorted(counts.index[:max_tracks])
    rgb = {n: tuple(c / 255 for c in COLORS.get(n, (128, 128, 128))[::-1]) for n in classes}
    ratios = [3.0] + [0.35] * len(groups)
    fig = plt.figure(figsize=(11, 0.9 + (1.7 + 0.35 * len(groups)) * len(tracks)), layout="constrained")
    grid = fig.add_gridspec(len(tracks) * len(ratios), 1, height_ratios=ratios * len(tracks))
    t_end = float(table["time_s"].max()) or 1.0
    first = None
    for k, tid in enumerate(tracks):
        rows = table[table["track_id"] == tid].sort_values("time_s")
        ax = fig.add_subplot(grid[k * len(ratios)], sharex=first)
        first = first or ax
        ax.stackplot(rows["time_s"], *(rows[f"p_{n}"] for n in classes), colors=[rgb[n] for n in classes],
                     step="post")
        ax.set_ylim(0, 1)
        ax.set_xlim(0, t_end)
        ax.set_ylabel(f"person {tid}\nface", fontsize=9)
        ax.tick_params(labelbottom=False)
        for j, g in enumerate(groups):
            strip = fig.add_subplot(grid[k * len(ratios) + 1 + j], sharex=first)
            cols = [f"p_{g}_{n}" for n in classes]
            part = rows.dropna(subset=cols)
            if not part.empty:
                top = part[cols].to_numpy().argmax(1)
                times = part["time_s"].to_numpy()
                widths = np.diff(np.append(times, times[-1] + (np.median(np.diff(times)) if len(times) > 1 else 0.1)))
                strip.bar(times, 1, width=widths, align="edge", color=[rgb[classes[i]] for i in top], linewidth=0)
            strip.set_yticks([])
            strip.set_ylabel(g, rotation=0, ha="right", va="center", fontsize=8)
            strip.tick_params(labelbottom=False)
    fig.axes[-1].tick_params(labelbottom=True)
    fig.axes[-1].set_xlabel("time (s)")
    fig.legend(handles=[Patch(color=rgb[n], label=n) for n in classes], loc="outside right upper", fontsize=8,
               title="face / voice / fused", title_fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def draw_tracked(image: np.ndarray, faces: Sequence[TrackedFace], bars: bool = True) -> np.ndarray:
    """Draw tracked faces in place: box, ``#id label p%`` and probability panels."""
    marks = [FaceMark(f.face.box, f.label, f.probs, f"#{f.track_id} {f.label} {f.probs.get(f.label, 0.0):.0%}")
             for f in faces]
    return draw_faces(image, marks, bars=bars)


class VideoWriter:
    """H.264 MP4 writer (PyAV/libx264, yuv420p: plays in browsers); odd sizes are cropped to even."""

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, crf: int = 23, preset: str = "veryfast") -> None:
        from fractions import Fraction

        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.path), mode="w")
        rate = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(30)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": preset}
        self.stream.thread_type = "AUTO"
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        """Append one BGR frame (all frames must have the size of the first)."""
        import av

        h, w = image.shape[:2]
        if self.size is None:
            self.size = (w - w % 2, h - h % 2)
            self.stream.width, self.stream.height = self.size
        w2, h2 = self.size
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h2, :w2]), format="bgr24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (a file with no frames is removed)."""
        if self.container is None:
            return
        if self.frames:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()
        self.container = None
        if not self.frames:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
