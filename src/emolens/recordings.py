"""Python API for recordings: videos and audio in, data (not files) out.

>>> import emolens
>>> result = emolens.analyze_video("interview.mp4", every=2)
>>> result.frames.groupby("track_id")["label"].agg(lambda s: s.mode()[0])   # pandas DataFrame
>>> result.summary["label_fused"], [t["label_vote"] for t in result.tracks]
>>> result.save("out/", formats=("csv", "json"))                            # only when asked
>>> for frame in emolens.stream("lecture.mp4", fps=5):                       # memory stays flat
...     print(frame.frame.time_s, [(f.track_id, f.label) for f in frame.faces])
>>> emolens.analyze_audio("talk.m4a").segments

Options are the :class:`~emolens.video.VideoOptions` fields as keyword arguments (``device``:
``cpu``, ``cuda`` or ``auto`` among them), plus ``model`` (face model: ``default``, ``accurate``
or an ``.onnx`` path). Inputs that cannot be read raise :class:`~emolens.media.MediaError`; bad
options raise ``TypeError``/``ValueError``. :func:`analyze_video` keeps every row in memory; for
long inputs pass file sinks (:mod:`emolens.sinks`) with ``collect=False``, or iterate :func:`stream`.
"""

from __future__ import annotations

import math
import numbers
import os
import typing
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emolens.device import check_device
from emolens.media import AUDIO_RATE, MediaError, VideoInfo, VideoSource, load_audio
from emolens.sinks import SINKS, FrameCollector, FrameSink
from emolens.tracked import FrameResult
from emolens.video import Cancel, FrameHook, VideoAnalyzer, VideoOptions, output_stem

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from emolens.voice import AudioResult

__all__ = ["FrameCollector", "FrameStream", "MediaError", "VideoResult", "analyze_audio", "analyze_video",
           "stream"]

#: Formats :meth:`VideoResult.save` writes: frames table, summary, Parquet table, timeline plot
#: (the frame sinks of :data:`emolens.sinks.SINKS` that need no images, plus the summary).
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
        from emolens.sinks import write_table_parquet

        if isinstance(formats, str):
            formats = (formats,)
        unknown = [f for f in formats if f not in SAVE_FORMATS]
        if unknown:
            raise ValueError(f"unknown format(s) {', '.join(map(repr, unknown))} ({', '.join(SAVE_FORMATS)}); "
                             "the annotated video needs the frames: use the CLI, VideoAnalyzer.run or "
                             "analyze_video(..., sinks=[AnnotatedVideoSink(...)])")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = stem or output_stem(self.source)

        def path(name: str) -> tuple[str, Path]:
            return SINKS[name].kind, out / f"{stem}{SINKS[name].suffix}"

        paths: dict[str, Path] = {}
        if "csv" in formats:
            kind, paths[kind] = path("csv")
            self.frames.astype({"detected": int, "classified": int}).to_csv(paths[kind], index=False)
        if "parquet" in formats:
            kind, paths[kind] = path("parquet")
            write_table_parquet(self.frames, paths[kind])
        if "png" in formats and not self.frames.empty:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            kind, paths[kind] = path("png")
            fig = timeline_figure(self.frames, title=stem)
            fig.savefig(paths[kind], dpi=100)
            plt.close(fig)
        if "json" in formats:
            paths["summary_json"] = out / f"{stem}.summary.json"
            write_json({**self.summary, "outputs": {k: str(v) for k, v in paths.items()}}, paths["summary_json"])
        return paths


def analyze_video(source: str | int | os.PathLike, model: str | os.PathLike | None = None,
                  progress: bool = False, sinks: Sequence[FrameSink] = (), collect: bool = True,
                  on_frame: FrameHook | None = None, cancel: Cancel | None = None,
                  **options: object) -> VideoResult:
    """Analyse one video file, image folder, camera or stream URL and return the per-frame table
    and the decisions in memory (no file is written unless ``sinks`` say so; see
    :meth:`VideoResult.save`).

    ``options``: :class:`~emolens.video.VideoOptions` fields (``every``, ``fps``, ``max_frames``,
    ``detect_every``, ``modality``, ``device``...); ``model``: face model name or ``.onnx`` path;
    ``progress``: show a progress bar; ``sinks``: more outputs fed frame by frame (e.g.
    ``emolens.sinks.ParquetSink("out.parquet")``); ``collect=False`` keeps no rows in memory
    (``.frames`` is then empty: for long inputs written to sinks); ``on_frame``/``cancel``: the
    hooks of :meth:`~emolens.video.VideoAnalyzer.analyse`. Raises
    :class:`~emolens.media.MediaError` when the input cannot be read; a decoding error midway
    is kept in ``summary["error"]``.
    """
    analyzer = _analyzer(model, options)
    collector = FrameCollector()
    summary = analyzer.analyse(source, [*([collector] if collect else []), *sinks], progress=progress,
                               desc=output_stem(str(source)), on_frame=on_frame, cancel=cancel)
    if not collect:
        collector.open(analyzer.labels, (), 0.0)
    return VideoResult(collector.frame, summary, str(source))


class FrameStream:
    """Iterator over the analysed frames of one input (:class:`~emolens.video.FrameResult`:
    ``.frame`` with ``image``/``index``/``time_s`` and ``.faces``, each a
    :class:`~emolens.video.TrackedFace` with ``track_id``, ``face.box``, ``label``, ``probs``).

    Frames are decoded, analysed and handed over one at a time (memory stays flat however long
    the input). Faces only: no sound. Closes itself at the end; ``close()`` (or ``with``) stops early.
    """

    def __init__(self, analyzer: VideoAnalyzer, source: str | int | os.PathLike) -> None:
        self.analyzer = analyzer
        self._src: VideoSource = analyzer.source(source)
        self._results: Generator[FrameResult, None, None] | None = None

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
            self._results.close()
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
                  threads: int | None = None, device: str = "cpu") -> AudioResult:
    """Emotion in speech of an audio file, a video's sound track, or 16 kHz mono float samples.

    Returns an :class:`~emolens.voice.AudioResult`: overall ``label``/``probs`` (``None``/empty
    when no speech was found), the ``segments`` timeline (``start_s, end_s, label, probs``),
    ``to_dict()`` (the ``emolens audio --json`` shape). Same settings as ``emolens audio``
    (``vad``: auto, silero, energy or none; ``device``: cpu, cuda or auto for the emotion
    model). An input that cannot be decoded raises :class:`~emolens.media.MediaError`.
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
    check_device(device)
    analyzer = AudioAnalyzer(model, vad=vad, threads=threads, threshold=threshold, max_segment_s=max_segment_s,
                             device=device)
    return analyzer.analyze(audio, path)
