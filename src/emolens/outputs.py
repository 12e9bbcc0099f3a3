"""Writers and drawings: JSON files, tables, annotated images; frame CSVs, timelines, annotated videos."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: BGR colour per emotion, used by every drawing so a label always has the same colour.
COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (0, 200, 255),
    "sad": (200, 120, 40), "surprise": (230, 200, 0), "neutral": (170, 170, 170),
    "contempt": (60, 100, 140), "calm": (200, 200, 120),
}


def write_json(obj: object, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented UTF-8 JSON, creating parent folders (atomic replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def draw_face(
    image: np.ndarray,
    box: Sequence[float],
    label: str,
    probs: dict[str, float] | None = None,
    title: str | None = None,
    bars: bool = True,
) -> None:
    """Draw one face in place: box, ``title`` (default: label and probability) and probability bars."""
    import cv2

    h_img, w_img = image.shape[:2]
    x, y, w, h = (int(round(v)) for v in box)
    color = COLORS.get(label, (255, 255, 255))
    thick = max(1, round(min(h_img, w_img) / 300))
    cv2.rectangle(image, (x, y), (x + w, y + h), color, thick + 1)
    text = title or (f"{label} {probs[label]:.0%}" if probs and label in probs else label)
    scale = max(0.4, min(1.2, w / 160))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    ty = y - 4 if y - th - 8 > 0 else y + h + th + 4
    cv2.rectangle(image, (x, ty - th - 4), (x + tw + 4, ty + base - 2), color, -1)
    cv2.putText(image, text, (x + 2, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    if not (bars and probs):
        return
    bar_w = max(40, min(120, w))
    row = max(8, int(12 * scale))
    bx = x + w + 4 if x + w + 4 + bar_w + 60 < w_img else max(0, x - bar_w - 64)
    for i, (name, p) in enumerate(sorted(probs.items(), key=lambda kv: -kv[1])[:7]):
        by = y + i * (row + 2)
        if by + row > h_img:
            break
        cv2.rectangle(image, (bx, by), (bx + bar_w, by + row), (50, 50, 50), -1)
        cv2.rectangle(image, (bx, by), (bx + int(bar_w * p), by + row), COLORS.get(name, (255, 255, 255)), -1)
        cv2.putText(image, f"{name[:8]} {p:.2f}", (bx + bar_w + 3, by + row - 1), cv2.FONT_HERSHEY_SIMPLEX,
                    row / 26, (255, 255, 255), 1, cv2.LINE_AA)


def annotate_image(image: np.ndarray, faces: Sequence[object]) -> np.ndarray:
    """A copy of a BGR image with every :class:`~emolens.api.FaceResult` drawn on it."""
    out = image.copy()
    for f in faces:
        draw_face(out, f.face.box, f.label, f.probs)  # type: ignore[attr-defined]
    return out


def faces_table(results: Sequence[object]) -> str:
    """Plain-text table of :class:`~emolens.api.ImageResult` values (one row per face)."""
    lines = [f"{'file':<40} {'face':>4}  {'box (x,y,w,h)':<22} {'label':<9} {'prob':>5}  top-2"]
    for r in results:
        name = Path(r.path).name if r.path else "<array>"  # type: ignore[attr-defined]
        if r.error:  # type: ignore[attr-defined]
            lines.append(f"{name:<40}  ERROR: {r.error}")  # type: ignore[attr-defined]
            continue
        if not r.faces:  # type: ignore[attr-defined]
            lines.append(f"{name:<40}  no face found")
        for i, f in enumerate(r.faces):  # type: ignore[attr-defined]
            top = sorted(f.probs.items(), key=lambda kv: -kv[1])
            box = ",".join(str(v) for v in f.box)
            second = f"{top[1][0]} {top[1][1]:.2f}" if len(top) > 1 else ""
            lines.append(f"{name:<40} {i:>4}  {box:<22} {f.label:<9} {top[0][1]:>5.2f}  {second}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Video outputs: per-frame CSV (written as we go), Parquet, timeline plot, annotated video.
# --------------------------------------------------------------------------------------------

FRAME_COLUMNS: tuple[str, ...] = ("time_s", "frame", "track_id", "x", "y", "w", "h", "score", "label")


class FrameCsvWriter:
    """``<stem>.frames.csv``: one row per face per analysed frame, flushed after every frame, so
    rows already computed survive a crash, a decode error or Ctrl-C.

    Columns: ``time_s, frame, track_id, x, y, w, h, score, label, p_<class>...``.
    """

    def __init__(self, path: str | os.PathLike, labels: Sequence[str], extra: Sequence[str] = ()) -> None:
        import csv

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.labels = tuple(labels)
        self.extra = tuple(extra)  # more probability groups, e.g. ("voice", "fused") -> p_voice_<class>...
        self._file = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.writer(self._file)
        self._csv.writerow([
            *FRAME_COLUMNS, *(f"p_{name}" for name in self.labels),
            *(f"p_{group}_{name}" for group in self.extra for name in self.labels),
        ])
        self._file.flush()
        self.rows = 0

    def write_frame(
        self, time_s: float, frame: int, faces: Sequence[object], extras: Sequence[dict] | None = None
    ) -> None:
        """Write one frame's faces (objects with ``track_id``, ``face``, ``label``, ``probs``).

        ``extras`` (one dict per face) holds a probability vector or None per extra group;
        None leaves that group's cells empty (e.g. no speech at that moment).
        """
        for i, f in enumerate(faces):
            x, y, w, h = (int(round(float(v))) for v in f.face.box)  # type: ignore[attr-defined]
            probs = f.probs  # type: ignore[attr-defined]
            more: list[str] = []
            for group in self.extra:
                vec = extras[i].get(group) if extras else None
                more += [""] * len(self.labels) if vec is None else [f"{float(v):.4f}" for v in vec]
            self._csv.writerow([
                f"{time_s:.3f}", frame, f.track_id, x, y, w, h, f"{f.face.score:.3f}", f.label,  # type: ignore[attr-defined]
                *(f"{probs.get(name, 0.0):.4f}" for name in self.labels), *more,
            ])
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


def write_parquet(csv_path: str | os.PathLike, parquet_path: str | os.PathLike) -> None:
    """Convert a frames CSV into Parquet (needs ``pyarrow``: ``pip install 'emolens[parquet]'``)."""
    import pandas as pd

    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise RuntimeError("--format parquet needs pyarrow: pip install 'emolens[parquet]'") from None
    table = pd.read_csv(csv_path)
    Path(parquet_path).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(parquet_path, index=False)


def plot_timeline(csv_path: str | os.PathLike, png_path: str | os.PathLike, title: str | None = None) -> bool:
    """PNG of every track's emotion probabilities over time (one panel per track, stacked areas).

    Returns False (and writes nothing) when the CSV has no rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    table = pd.read_csv(csv_path)
    if table.empty:
        return False
    classes = [c[2:] for c in table.columns if c.startswith("p_")]
    tracks = sorted(table["track_id"].unique())[:12]
    fig, axes = plt.subplots(len(tracks), 1, figsize=(10, 1.8 + 1.6 * len(tracks)), sharex=True, squeeze=False)
    for ax, tid in zip(axes[:, 0], tracks, strict=True):
        rows = table[table["track_id"] == tid].sort_values("time_s")
        colors = [tuple(c / 255 for c in COLORS.get(n, (128, 128, 128))[::-1]) for n in classes]
        ax.stackplot(rows["time_s"], *(rows[f"p_{n}"] for n in classes), labels=classes, colors=colors, step="post")
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"track {tid}")
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return True


def draw_tracked(image: np.ndarray, faces: Sequence[object], bars: bool = True) -> np.ndarray:
    """Draw tracked faces in place: box, ``#id label p%`` and probability bars."""
    for f in faces:
        label, probs = f.label, f.probs  # type: ignore[attr-defined]
        title = f"#{f.track_id} {label} {probs.get(label, 0.0):.0%}"  # type: ignore[attr-defined]
        draw_face(image, f.face.box, label, probs, title=title, bars=bars)  # type: ignore[attr-defined]
    return image


def draw_hud(image: np.ndarray, text: str) -> np.ndarray:
    """Draw a small status line (e.g. ``"12.3 FPS  2 faces"``) in the top-left corner, in place."""
    import cv2

    scale = max(0.45, image.shape[0] / 900)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(image, (0, 0), (tw + 10, th + base + 10), (0, 0, 0), -1)
    cv2.putText(image, text, (5, th + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


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
