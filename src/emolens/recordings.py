"""Python API for recordings: videos and audio in, data (not files) out.

>>> import emolens
>>> result = emolens.analyze_video("interview.mp4", every=2)
>>> result.frames.groupby("track_id")["label"].agg(lambda s: s.mode()[0])   # pandas DataFrame
>>> result.summary["label_fused"], [t["label_vote"] for t in result.tracks]
>>> result.save("out/", formats=("csv", "json"))                            # only when asked
>>> for frame in emolens.stream("lecture.mp4", fps=5):                       # memory stays flat
...     print(frame.frame.time_s, [(f.track_id, f.label) for f in frame.faces])
>>> emolens.analyze_audio("talk.m4a").segments

Options are the :class:`~emolens.video.VideoOptions` fields as keyword arguments, plus ``model``
(face model: ``default``, ``accurate`` or an ``.onnx`` path). Inputs that cannot be read raise
:class:`~emolens.media.MediaError`; bad options raise ``TypeError``/``ValueError``.
"""

from __future__ import annotations

import math
import numbers
import os
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.media import AUDIO_RATE, MediaError, VideoInfo, VideoSource, load_audio
from emolens.outputs import FRAME_COLUMNS
from emolens.video import FrameResult, VideoAnalyzer, VideoOptions, output_stem

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from emolens.voice import AudioResult

__all__ = ["FrameCollector", "FrameStream", "MediaError", "VideoResult", "analyze_audio", "analyze_video",
           "stream"]

#: Formats :meth:`VideoResult.save` writes: frames table, summary, Parquet table, timeline plot.
SAVE_FORMATS = ("csv", "json", "parquet", "png")


def _option_types() -> dict[str, tuple[type, ...]]:
    """Accepted Python types of each :class:`VideoOptions` field (``None`` where optional;
    numpy numbers count as numbers)."""
    hints = typing.get_type_hints(VideoOptions)
    wider: dict[type, type] = {int: numbers.Integral, float: numbers.Real}
    out: dict[str, tuple[type, ...]] = {}
    for f in fields(VideoOptions):
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        out[f.name] = tuple(wider.get(a, a) for a in args if isinstance(a, type))
    return out


def _type_name(t: type) -> str:
    return {type(None): "None", numbers.Integral: "int", numbers.Real: "float"}.get(t, t.__name__)


def video_options(**options: object) -> VideoOptions:
    """:class:`VideoOptions` from keyword arguments, with clear errors: ``TypeError`` for an
    unknown name or a value of the wrong type, ``ValueError`` for a value out of range."""
    types = _option_types()
    unknown = sorted(set(options) - set(types))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; valid: model, {', '.join(types)}")
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if not isinstance(value, types[name]) or isinstance(value, bool):
            want = " or ".join(_type_name(t) for t in types[name])
            raise TypeError(f"option {name} must be {want}, not {type(value).__name__} ({value!r})")
        if isinstance(value, numbers.Real) and not math.isfinite(value):
            raise ValueError(f"option {name} must be a finite number, not {value!r}")
        checked[name] = value
    return VideoOptions(**checked)


def _analyzer(model: str | os.PathLike | None, options: dict[str, object]) -> VideoAnalyzer:
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a model name or an .onnx path, not {type(model).__name__}")
    opts = video_options(**options)
    return VideoAnalyzer(opts, model)


def _round(v: float, digits: int) -> float:
    return round(float(v), digits)


class FrameCollector:
    """A frame sink (see :class:`emolens.video.FrameSink`) that keeps the rows of the frames
    CSV in memory, with the CSV's columns and rounding: :attr:`frame` gives a DataFrame."""

    def __init__(self) -> None:
        self.columns: list[str] = []
        self.groups: tuple[str, ...] = ()
        self.labels: tuple[str, ...] = ()
        self.rows: list[tuple] = []

    def open(self, labels: tuple[str, ...], groups: tuple[str, ...], fps: float) -> None:
        """Set the columns: those of the frames CSV."""
        self.labels, self.groups = labels, groups
        self.columns = [*FRAME_COLUMNS, *(f"p_{n}" for n in labels),
                        *(f"p_{g}_{n}" for g in groups for n in labels)]

    def write(self, result: FrameResult, fused: list[dict]) -> None:
        """One row per face: numbers rounded as in the CSV; empty cells are NaN."""
        t, index = _round(result.frame.time_s, 3), result.frame.index
        for f, extra in zip(result.faces, fused, strict=True):
            x, y, w, h = (int(round(float(v))) for v in f.face.box)
            marks = f.face.landmarks
            points = [math.nan] * 10 if marks is None else [_round(v, 1) for v in np.asarray(marks).reshape(-1)[:10]]
            more: list[float] = []
            for g in self.groups:
                vec = extra.get(g)
                more += [math.nan] * len(self.labels) if vec is None else [_round(v, 4) for v in vec]
            self.rows.append((t, index, f.track_id, x, y, w, h, _round(f.face.score, 3), bool(f.detected),
                              bool(f.classified), _round(f.evidence, 3), *points, f.label,
                              *(_round(f.probs.get(n, 0.0), 4) for n in self.labels), *more))

    def close(self) -> None:
        """Nothing to release."""

    @property
    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (an empty one with the columns when no face was found)."""
        import pandas as pd

        table = pd.DataFrame.from_records(self.rows, columns=self.columns)
        return table.astype({"time_s": float, "frame": int, "track_id": int, "x": int, "y": int, "w": int, "h": int,
                             "detected": bool, "classified": bool})


@dataclass
class VideoResult:
    """Everything ``emolens video`` computes for one input, in memory.

    ``frames``: one row per face per analysed frame (the columns of ``<stem>.frames.csv``:
    ``time_s, frame, track_id, x, y, w, h, score, detected, classified, evidence``, the
    landmarks, ``label``, ``p_<class>``, and ``p_voice_<class>``/``p_fused_<class>`` when the
    sound track had speech); ``summary``: the dict of ``<stem>.summary.json``.
    """

    frames: pd.DataFrame = field(repr=False)
    summary: dict = field(repr=False)
    source: str = ""

    @property
    def tracks(self) -> list[dict]:
        """Per-person decisions (``summary["tracks"]``): ``track_id, first_s, last_s, n_frames,
        label_sum, label_vote, mean_probs, label_face, label_voice, label_fused...``."""
        return self.summary["tracks"]

    def __repr__(self) -> str:
        s = self.summary
        return (f"VideoResult({self.source!r}: {s['frames_analysed']} frames, {len(s['tracks'])} track(s), "
                f"{len(self.frames)} rows, label_sum={s['label_sum']!r}, label_fused={s['label_fused']!r})")

    def save(self, out_dir: str | os.PathLike, formats: Sequence[str] = ("csv", "json"),
             stem: str | None = None) -> dict[str, Path]:
        """Write ``<stem>.frames.csv`` (``csv``), ``<stem>.summary.json`` (``json``),
        ``<stem>.frames.parquet`` (``parquet``, needs pyarrow) and ``<stem>.timeline.png``
        (``png``, when faces were found) into ``out_dir``; returns ``{kind: path}``.
        ``stem`` defaults to the source's name."""
        from emolens.outputs import timeline_figure, write_json

        if isinstance(formats, str):
            formats = (formats,)
        unknown = [f for f in formats if f not in SAVE_FORMATS]
        if unknown:
            raise ValueError(f"unknown format(s) {', '.join(map(repr, unknown))} ({', '.join(SAVE_FORMATS)}); "
                             "the annotated video needs the frames: use the CLI or VideoAnalyzer.run")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = stem or output_stem(self.source)
        table = self.frames.astype({"detected": int, "classified": int})
        paths: dict[str, Path] = {}
        if "csv" in formats:
            paths["frames_csv"] = out / f"{stem}.frames.csv"
            table.to_csv(paths["frames_csv"], index=False)
        if "parquet" in formats:
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise RuntimeError("saving parquet needs pyarrow: pip install 'emolens[parquet]'") from None
            paths["frames_parquet"] = out / f"{stem}.frames.parquet"
            table.to_parquet(paths["frames_parquet"], index=False)
        if "png" in formats and not table.empty:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            paths["timeline_png"] = out / f"{stem}.timeline.png"
            fig = timeline_figure(table, title=stem)
            fig.savefig(paths["timeline_png"], dpi=100)
            plt.close(fig)
        if "json" in formats:
            paths["summary_json"] = out / f"{stem}.summary.json"
            write_json({**self.summary, "outputs": {k: str(v) for k, v in paths.items()}}, paths["summary_json"])
        return paths


def analyze_video(source: str | int | os.PathLike, model: str | os.PathLike | None = None,
                  progress: bool = False, **options: object) -> VideoResult:
    """Analyse one video file, image folder, camera or stream URL and return the per-frame table
    and the decisions in memory (no file is written; see :meth:`VideoResult.save`).

    ``options``: :class:`~emolens.video.VideoOptions` fields (``every``, ``fps``, ``max_frames``,
    ``detect_every``, ``modality``...); ``model``: face model name or ``.onnx`` path;
    ``progress``: show a progress bar. Raises :class:`~emolens.media.MediaError` when the input
    cannot be read; a decoding error midway is kept in ``summary["error"]``.
    """
    analyzer = _analyzer(model, options)
    collector = FrameCollector()
    summary = analyzer.analyse(source, [collector], progress=progress, desc=output_stem(str(source)))
    return VideoResult(collector.frame, summary, str(source))


class FrameStream:
    """Iterator over the analysed frames of one input (:class:`~emolens.video.FrameResult`:
    ``.frame`` with ``image``/``index``/``time_s`` and ``.faces``, each a
    :class:`~emolens.video.TrackedFace` with ``track_id``, ``face.box``, ``label``, ``probs``).

    Frames are decoded, analysed and handed over one at a time (memory stays flat however long
    the input). Faces only: no sound. Closes itself at the end; ``close()`` (or ``with``) stops early.
    """

    def __init__(self, analyzer: VideoAnalyzer, source: str | int | os.PathLike) -> None:
        o = analyzer.options
        self.analyzer = analyzer
        self._src = VideoSource(source, every=o.every, fps=o.fps, max_frames=o.max_frames,
                                max_pixels=o.max_video_pixels)
        self._results: Iterator[FrameResult] | None = None

    @property
    def info(self) -> VideoInfo:
        """What the source says about itself (size, fps, duration where known)."""
        return self._src.info

    @property
    def frames_decoded(self) -> int:
        """Frames decoded so far (a few ahead of those handed over, never the whole input)."""
        return self._src.frames_decoded

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self) -> FrameResult:
        if self._results is None:
            self._results = self.analyzer.process(self._src)
        try:
            return next(self._results)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop decoding and release the input."""
        if self._results is not None:
            close = getattr(self._results, "close", None)
            if close is not None:
                close()
        self._src.close()

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream(source: str | int | os.PathLike, model: str | os.PathLike | None = None,
           **options: object) -> FrameStream:
    """Analyse one input frame by frame: ``for result in emolens.stream("clip.mp4"): ...``.

    Same options as :func:`analyze_video` (``modality`` is ignored: faces only). The input is
    opened at once (a bad input raises :class:`~emolens.media.MediaError` here), frames are
    analysed as they are asked for.
    """
    return FrameStream(_analyzer(model, options), source)


def analyze_audio(source: str | os.PathLike | np.ndarray, model: str | os.PathLike | None = None,
                  vad: str = "auto", max_segment_s: float = 4.0, threshold: float = 0.5,
                  threads: int | None = None) -> AudioResult:
    """Emotion in speech of an audio file, a video's sound track, or 16 kHz mono float samples.

    Returns an :class:`~emolens.voice.AudioResult`: overall ``label``/``probs`` (``None``/empty
    when no speech was found), the ``segments`` timeline (``start_s, end_s, label, probs``),
    ``to_dict()`` (the ``emolens audio --json`` shape). Same settings as ``emolens audio``
    (``vad``: auto, silero, energy or none). An input that cannot be decoded raises
    :class:`~emolens.media.MediaError`.
    """
    from emolens.voice import AudioAnalyzer

    if not isinstance(max_segment_s, (int, float)) or max_segment_s < 0:
        raise ValueError(f"max_segment_s must be a number >= 0, not {max_segment_s!r}")
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in 0..1, not {threshold!r}")
    if isinstance(source, np.ndarray):
        audio, path = source, None
        if audio.size == 0:
            raise MediaError("audio array is empty")
    elif isinstance(source, (str, os.PathLike)):
        audio, path = load_audio(source, AUDIO_RATE), str(source)
    else:
        raise TypeError(f"source must be a path or a numpy array, not {type(source).__name__}")
    analyzer = AudioAnalyzer(model, vad=vad, threads=threads, threshold=threshold, max_segment_s=max_segment_s)
    return analyzer.analyze(audio, path)
