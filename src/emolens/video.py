"""Faces in video and live streams: source -> faces -> expressions -> tracks -> decisions -> outputs.

>>> from emolens.video import VideoAnalyzer
>>> summary = VideoAnalyzer().run("clip.mp4", "out/")   # out/clip.frames.csv, .summary.json, .annotated.mp4
>>> summary["label_sum"], [t["label_vote"] for t in summary["tracks"]]

Everything is a stream: a frame is decoded, analysed, handed to the sinks (:mod:`emolens.sinks`:
CSV, Parquet, annotated MP4, timeline) and dropped, so memory does not grow with video length;
:meth:`VideoAnalyzer.analyse` is the frame loop, with progress and cancel hooks. Speed levers
(all in :class:`VideoOptions`): detection runs every ``detect_every`` frames and the tracker
carries boxes between (the carried crops are re-classified); detection runs on a frame
downscaled so the smallest tracked face is about ``detect_min_face`` pixels (a full-size pass
every ``refresh_s`` finds new small faces); the classifier is batched over the faces of a frame;
decoding runs in a background thread.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emolens.api import FaceAnalyzer
from emolens.decide import Decisions, face_evidence, sharpness
from emolens.device import check_device
from emolens.expression import ExpressionModel
from emolens.faces import Face, YuNetDetector, limit_detector_threads, make_detector
from emolens.labels import probs_dict
from emolens.media import DEFAULT_MAX_VIDEO_PIXELS, Frame, MediaError, VideoSource, expected_frames, source_kind
from emolens.tracked import FrameResult, FusedFace, TrackedFace
from emolens.tracking import FaceTracker, ProbSmoother

if TYPE_CHECKING:  # pragma: no cover
    from emolens.sinks import FrameSink
    from emolens.voice import AudioAnalyzer, AudioResult

__all__ = ["FrameResult", "FusedFace", "TrackedFace", "VideoAnalyzer", "VideoOptions", "output_stem", "sampled_fps"]


@dataclass
class VideoOptions:
    """Settings of the video pipeline (the ``emolens video``/``live`` options)."""

    every: int = 1  #: analyse every N-th decoded frame
    fps: float | None = None  #: or analyse at most F frames per second (by timestamp)
    max_frames: int | None = None  #: stop after this many analysed frames
    detect_every: int = 2  #: run the face detector on every N-th analysed frame; the tracker carries boxes between
    classify_every: int = 2  #: classify each tracked face every N-th analysed frame (new tracks at once); between,
    #: a track keeps its last (smoothed) probabilities: expressions change slower than 15 Hz
    detector: str = "yunet"  #: face detector (see emolens.faces.DETECTORS)
    min_score: float = 0.6  #: detections at or above this start tracks
    low_score: float = 0.4  #: weaker detections down to this only continue existing tracks
    detect_max_side: int = 640  #: detection never runs on a larger image than this (long side)
    detect_min_face: int = 32  #: downscale detection so the smallest tracked face is about this tall (0: off)
    refresh_s: float = 2.0  #: full-size detection at least this often (finds new, small faces; else half size)
    smooth: str = "ema"  #: per-track smoothing of probabilities: ema, window or none
    alpha: float = 0.5  #: ema weight of the newest frame
    window: int = 5  #: window length (frames) for smooth=window
    max_lost_s: float = 1.0  #: a track survives this long without its face (occlusion)
    min_hits: int = 2  #: detections before a new track gets an id
    threads: int = 1  #: CPU threads of the detector (OpenMP) and of the classifier (onnxruntime)
    modality: str = "both"  #: face, voice or both (fuse face and voice where there is speech)
    max_video_pixels: int | None = DEFAULT_MAX_VIDEO_PIXELS  #: refuse larger frames before decoding (None: no limit)
    device: str = "cpu"  #: where the models run: cpu, cuda or auto (see emolens.device)

    def __post_init__(self) -> None:
        if self.every < 1 or self.detect_every < 1 or self.classify_every < 1:
            raise ValueError("--every, --detect-every and --classify-every must be >= 1")
        if self.fps is not None and self.fps <= 0:
            raise ValueError("--fps must be > 0")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("--max-frames must be >= 1")
        if not (0 <= self.min_score <= 1 and 0 <= self.alpha <= 1):
            raise ValueError("--min-score and --alpha must be in 0..1")
        if self.smooth not in ("ema", "window", "none"):
            raise ValueError(f"unknown smoothing {self.smooth!r} (ema, window, none)")
        if self.modality not in ("face", "voice", "both"):
            raise ValueError(f"unknown modality {self.modality!r} (face, voice, both)")
        check_device(self.device)


def output_stem(source: str) -> str:
    """File-name stem for a source: the file/folder name, ``camera0``, or a cleaned-up URL."""
    kind = source_kind(source)
    if kind == "camera":
        return f"camera{int(source)}"
    if kind == "stream":
        return re.sub(r"[^A-Za-z0-9._-]+", "_", source.split("://", 1)[-1]).strip("_")[:80] or "stream"
    return Path(source).stem if kind == "file" else Path(source).name


#: ``on_frame(frames_done, frames_expected)``: called after every analysed frame (expected: None when unknown).
FrameHook = Callable[[int, int | None], None]
#: Stops the frame loop when set / when it returns True (checked before every frame).
Cancel = threading.Event | Callable[[], bool]


def _cancelled(cancel: Cancel | None) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


class VideoAnalyzer:
    """Detector, tracker, expression model and decisions for videos and streams (load once, reuse)."""

    def __init__(self, options: VideoOptions | None = None, model: str | os.PathLike | ExpressionModel | None = None):
        self.options = options or VideoOptions()
        o = self.options
        if o.detector == "yunet":
            detector = YuNetDetector(min_score=min(o.low_score, o.min_score), max_side=o.detect_max_side)
        else:
            detector = make_detector(o.detector)
        limit_detector_threads(o.threads)
        if model is None or isinstance(model, (str, os.PathLike)):
            # tiny batches: one thread, no spinning pool
            model = ExpressionModel(model, threads=o.threads, device=o.device)
        self.faces = FaceAnalyzer(detector, model)
        self.labels: tuple[str, ...] = tuple(self.faces.model.labels)
        self._audio: AudioAnalyzer | None = None

    def voice(self, source: str | int | os.PathLike) -> tuple[AudioResult | None, str | None]:
        """Speech emotion over a file's sound track: ``(AudioResult or None, note)``.

        The audio stream is decoded on its own (audio packets only; the video is decoded once,
        in the frame loop). No sound track, or no speech model, gives ``None`` and a note.
        """
        if self.options.modality == "face" or source_kind(str(source)) != "file":
            return None, None
        from emolens.voice import DEFAULT_SPEECH_MODEL, AudioAnalyzer

        if not DEFAULT_SPEECH_MODEL.is_file():
            return None, "no speech model installed: face only"
        try:
            from emolens.media import load_audio

            audio = load_audio(str(source))
        except MediaError as exc:
            return None, f"no usable sound track ({exc}): face only"
        if self._audio is None:
            self._audio = AudioAnalyzer(threads=self.options.threads, device=self.options.device)
        result = self._audio.analyze(audio, str(source))
        if not result.segments:
            return result, "no speech found in the sound track: face only"
        return result, None

    # -- the per-frame pipeline -------------------------------------------------------------
    def _detect(self, image: np.ndarray, tracker: FaceTracker, time_s: float, state: dict) -> list[Face]:
        """Detect on a frame downscaled as far as the tracked faces allow (see :class:`VideoOptions`)."""
        det, o = self.faces.detector, self.options
        if not isinstance(det, YuNetDetector):
            return det.detect(image)
        long_side = max(image.shape[:2])
        full = min(long_side, o.detect_max_side)
        sizes = [min(t.face.box[2], t.face.box[3]) for t in tracker.tracks if t.confirmed]
        if not o.detect_min_face or time_s - state.get("last_full", -math.inf) >= o.refresh_s:
            side = full
        elif sizes:  # faces are tracked: shrink until the smallest is about detect_min_face pixels
            side = int(min(full, max(160, long_side * o.detect_min_face / max(min(sizes), 1.0))))
        else:  # nothing tracked: a half-size pass between the full-size ones
            side = int(min(full, max(160, o.detect_max_side // 2)))
        if side >= full:
            state["last_full"] = time_s
        det.max_side = side
        return det.detect(image)

    def process(self, frames: Iterable[Frame]) -> Generator[FrameResult, None, None]:
        """Analyse a stream of frames (one video: tracker state lives for the duration of the call)."""
        o, labels = self.options, self.labels
        tracker = FaceTracker(high_score=o.min_score, max_lost_s=o.max_lost_s, min_hits=o.min_hits)
        smoother = ProbSmoother(o.smooth, o.alpha, o.window)
        state: dict = {}
        last: dict[int, np.ndarray] = {}  # newest smoothed probabilities per track
        evidence: dict[int, float] = {}  # newest evidence weight per track
        for n, frame in enumerate(frames):
            detected = n % o.detect_every == 0
            if detected:
                pairs = tracker.update(self._detect(frame.image, tracker, frame.time_s, state), frame.time_s)
                smoother.forget(tracker.removed)
                for t in tracker.removed:
                    last.pop(t, None)
                    evidence.pop(t, None)
            else:
                pairs = tracker.carry(frame.time_s)
            due = [(t, f) for t, f in pairs if n % o.classify_every == 0 or t not in last]
            if due:
                crops = self.faces.model.align(frame.image, [f for _, f in due])
                probs = self.faces.model.predict(crops)
                for (track_id, face), p, crop in zip(due, probs, crops, strict=True):
                    last[track_id] = smoother.update(track_id, p)
                    evidence[track_id] = face_evidence(float(face.box[3]), face.score, sharpness(crop))
            due_ids = {t for t, _ in due}
            tracked = []
            for track_id, face in pairs:
                p = last[track_id]
                label = labels[int(np.argmax(p))]
                tracked.append(TrackedFace(track_id, face, label, probs_dict(p, labels), detected, p,
                                           evidence[track_id], track_id in due_ids))
            yield FrameResult(frame, tracked)

    def source(self, source: str | int | os.PathLike) -> VideoSource:
        """The input opened with this analyzer's sampling settings (raises :class:`~emolens.media.MediaError`)."""
        o = self.options
        return VideoSource(source, every=o.every, fps=o.fps, max_frames=o.max_frames, max_pixels=o.max_video_pixels)

    # -- one input: the frame loop, handing each frame to sinks --------------------------------
    def analyse(
        self, source: str | int | os.PathLike, sinks: Sequence[FrameSink] = (), progress: bool = False,
        desc: str = "", on_frame: FrameHook | None = None, cancel: Cancel | None = None,
    ) -> dict:
        """Analyse one video/folder/camera/stream, handing every analysed frame (each face with
        its :class:`~emolens.tracked.FusedFace`) to each of ``sinks`` (opened once the labels and
        probability groups are known, closed at the end, also on errors); ``progress``: a tqdm bar
        titled ``desc``.

        Hooks: ``on_frame(frames_done, frames_expected)`` after every analysed frame
        (``frames_expected`` from :func:`~emolens.media.expected_frames`, None when unknown);
        ``cancel`` (a ``threading.Event`` or a function returning True to stop), checked before
        the sound track is analysed and before every frame: a cancel ends the loop cleanly,
        what the sinks got so far is kept, and the summary says ``"cancelled": true``.

        Returns the summary dict (``"outputs"``: what the sinks wrote). A source that cannot be
        opened or whose first frame cannot be decoded raises :class:`~emolens.media.MediaError`;
        a decoding error midway is recorded in ``summary["error"]`` and the frames before it have
        been handed on.
        """
        from tqdm import tqdm

        from emolens.fusion import FUSION_LABELS, AVFuser, VoiceTimeline

        o = self.options
        stop = _cancelled(cancel)
        src = self.source(source)
        info = src.info
        expected = expected_frames(info, o.every, o.fps, o.max_frames)
        error, cancelled = None, False
        n = rows = 0
        last_t = 0.0
        outputs: dict[str, str] = {}
        try:
            if self.labels != FUSION_LABELS and o.modality != "face":
                raise ValueError(f"the face model's labels {self.labels} differ from the fusion labels "
                                 f"{FUSION_LABELS}: use --modality face with this model")
            voice, voice_note = (None, None) if stop() else self.voice(source)
            timeline = VoiceTimeline.from_audio_result(voice) if voice is not None and voice.segments else None
            fuser = AVFuser(timeline, o.modality, speech_model=self._audio.model if self._audio else None)
            decisions = Decisions(self.labels)
            start = time.perf_counter()
            opened: list[FrameSink] = []
            results: Generator[FrameResult, None, None] | None = None
            bar = tqdm(total=expected, unit="frame", desc=desc[:30], disable=not progress, leave=False,
                       dynamic_ncols=True)
            try:
                for sink in sinks:
                    sink.open(self.labels, fuser.groups, sampled_fps(info.fps, o))
                    opened.append(sink)
                results = self.process(src)
                while not (cancelled := stop()):
                    result = next(results, None)
                    if result is None:
                        break
                    frame = result.frame
                    n, last_t = n + 1, frame.time_s
                    result = result.with_fusion(fuser.frame(frame.time_s, frame.image, result.faces))
                    for sink in sinks:
                        sink.write(result)
                    rows += len(result.faces)
                    for f in result.faces:
                        decisions.add(f.track_id, frame.time_s, f.p, f.evidence)
                    bar.update()
                    if on_frame is not None:
                        on_frame(n, expected)
            except MediaError as exc:
                error = str(exc)
            finally:
                if results is not None:
                    results.close()
                bar.close()
                for sink in opened:
                    outputs.update({k: str(v) for k, v in sink.close().items()})
        finally:
            src.close()
        if error is not None and n == 0:  # nothing decodable at all: like a file that does not open
            raise MediaError(error)
        elapsed = time.perf_counter() - start
        decoded_s = last_t + (1.0 / info.fps if info.fps else 0.0) if n else 0.0
        complete = error is None and not cancelled and o.max_frames is None
        duration = info.duration_s if (info.duration_s and complete) else decoded_s
        tracks = decisions.track_summaries()
        for t in tracks:
            t.update(fuser.track_labels(t["track_id"], t["label_sum"]))
        video_labels = decisions.video()
        return {
            "main_tracks": decisions.main_tracks(),
            "source": str(source),
            "duration_s": round(duration, 3),
            "frames_analysed": n,
            "frames_decoded": src.frames_decoded,
            "processing_fps": round(n / elapsed, 2) if elapsed > 0 else None,
            "width": info.width,
            "height": info.height,
            "fps": round(info.fps, 3) if info.fps else None,
            "faces_found": rows,
            "tracks": tracks,
            **video_labels,
            **fuser.video_labels(video_labels["label_sum"], voice.probs if voice is not None else None),
            "fusion": {
                "modality": o.modality,
                "voice_used": timeline is not None,
                "note": voice_note,
                "speaker_attribution": fuser.rules,
                "weights": fuser.weights.source.get("rule"),
            },
            "voice": None if voice is None else {k: v for k, v in voice.to_dict().items() if k != "path"},
            "labels": list(self.labels),
            "model": str(self.faces.model.path),
            "options": asdict(o),
            "outputs": outputs,
            "message": None if tracks else "no face found in the analysed frames",
            "error": error,
            "cancelled": cancelled,
        }

    # -- one input to files ------------------------------------------------------------------
    def run(
        self,
        source: str | int | os.PathLike,
        out_dir: str | os.PathLike,
        stem: str | None = None,
        annotate: bool = True,
        parquet: bool = False,
        plot: bool = False,
        progress: bool = False,
        bars: bool = True,
        on_frame: FrameHook | None = None,
        cancel: Cancel | None = None,
    ) -> dict:
        """Analyse one video/folder/camera/stream and write ``<stem>.frames.csv`` (rows flushed as
        they are computed), ``<stem>.summary.json``, ``<stem>.annotated.mp4`` (``annotate``),
        ``<stem>.frames.parquet`` (``parquet``, written as the frames come) and
        ``<stem>.timeline.png`` (``plot``, when faces were found); ``bars``: draw probability bars
        in the annotated video; ``on_frame``/``cancel``: the hooks of :meth:`analyse` (a cancelled
        run keeps what was written and still writes its summary).

        Returns the summary dict. A source that cannot be opened or whose first frame cannot be
        decoded raises :class:`~emolens.media.MediaError` (nothing is left behind); a decoding
        error midway is recorded in ``summary["error"]`` and the rows before it are kept.
        """
        from emolens.outputs import write_json
        from emolens.sinks import make_sinks

        stem = stem or output_stem(str(source))
        formats = ["csv", *(["mp4"] if annotate else []), *(["parquet"] if parquet else []),
                   *(["png"] if plot else [])]
        sinks = make_sinks(formats, out_dir, stem, {"mp4": {"bars": bars}})
        try:
            summary = self.analyse(source, sinks, progress=progress, desc=stem, on_frame=on_frame, cancel=cancel)
        except MediaError:  # nothing decodable: leave nothing behind
            for sink in sinks:
                sink.discard()
            raise
        summary_json = Path(out_dir) / f"{stem}.summary.json"
        summary["outputs"]["summary_json"] = str(summary_json)
        write_json(summary, summary_json)
        return summary


def sampled_fps(fps: float | None, o: VideoOptions) -> float:
    """The rate of the frames analysed: the source's (30 when unknown), thinned by ``o.fps`` or ``o.every``."""
    base = fps or 30.0
    return min(base, o.fps) if o.fps else base / o.every
