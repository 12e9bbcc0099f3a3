"""The per-input job of a batch: :class:`BatchWorker` holds one worker process's models (loaded
on first use, then reused) and turns one input into its files."""

from __future__ import annotations

# Only the standard library at module level (see emolens.batch.engines).
import os
import time
from pathlib import Path
from typing import Any

from emolens.batch import dataset
from emolens.batch.jobs import BatchSettings, Job, JobResult, now


class BatchWorker:
    """The models of one worker process (each loaded on first use, then reused for every input)
    and the job function: :meth:`run` writes one input's files into ``out_dir/<stem>/``."""

    def __init__(self, settings: BatchSettings, out_dir: str | os.PathLike) -> None:
        self.settings = settings
        self.out_dir = Path(out_dir)
        self._video: Any = None
        self._photo: Any = None
        self._audio: Any = None

    # -- models -----------------------------------------------------------------------------
    def video_analyzer(self) -> Any:
        """The :class:`~emolens.video.VideoAnalyzer` (loaded once)."""
        if self._video is None:
            from emolens.expression import ExpressionModel
            from emolens.video import VideoAnalyzer, VideoOptions

            s = self.settings
            options = VideoOptions(**{**s.video, "threads": s.threads, "device": s.device})
            self._video = VideoAnalyzer(options, ExpressionModel(s.model, threads=s.threads, device=s.device))
        return self._video

    def photo_analyzer(self) -> Any:
        """The :class:`~emolens.api.FaceAnalyzer` of photos (shares the video's face model)."""
        if self._photo is None:
            from emolens.api import FaceAnalyzer

            video = self.video_analyzer()
            o = video.options
            self._photo = FaceAnalyzer(o.detector, video.faces.model, min_score=o.min_score,
                                       max_pixels=self.settings.max_pixels, device=self.settings.device)
        return self._photo

    def audio_analyzer(self) -> Any:
        """The :class:`~emolens.voice.AudioAnalyzer` of audio inputs."""
        if self._audio is None:
            from emolens.voice import AudioAnalyzer

            s = self.settings
            self._audio = AudioAnalyzer(vad=s.vad, threads=s.threads, device=s.device)
        return self._audio

    def frames_schema(self) -> Any:
        """Arrow schema of the run's ``DIR/frames`` dataset (see :func:`emolens.batch.dataset.frames_schema`)."""
        return dataset.frames_schema(self.video_analyzer().labels)

    # -- one input --------------------------------------------------------------------------
    def run(self, job: Job) -> JobResult:
        """Analyse one input; never raises for a bad input (``status="failed"`` and the message)."""
        from emolens.media import MediaError

        start = time.perf_counter()
        result = JobResult(job.input, job.kind, job.stem, "ok")
        for part in dataset.partitions(self.out_dir, job.stem):  # a stale partition never outlives a redo
            part.unlink(missing_ok=True)
        try:
            handler = {"video": self._run_video, "photo": self._run_photo, "audio": self._run_audio}[job.kind]
            handler(job, self.out_dir / job.stem, result)
        except (MediaError, OSError, ValueError, RuntimeError) as exc:
            result.status, result.error = "failed", str(exc) or type(exc).__name__
        except Exception as exc:  # noqa: BLE001  (one bad input never stops the others)
            result.status, result.error = "failed", f"{job.input}: unexpected {type(exc).__name__}: {exc}"
        result.seconds = round(time.perf_counter() - start, 3)
        result.finished = now()
        return result

    def _rel(self, path: str | os.PathLike) -> str:
        return Path(path).resolve().relative_to(self.out_dir.resolve()).as_posix()

    def _run_video(self, job: Job, folder: Path, result: JobResult) -> None:
        analyzer = self.video_analyzer()
        s = self.settings
        summary = analyzer.run(job.input, folder, stem=job.stem, annotate=s.annotate, parquet=False, plot=s.plot,
                               progress=False, bars=s.bars)
        result.frames = int(summary["frames_analysed"])
        result.outputs = [self._rel(p) for p in summary["outputs"].values()]
        if s.parquet:
            part = dataset.partitions(self.out_dir, job.stem)[0]
            dataset.csv_to_partition(Path(summary["outputs"]["frames_csv"]), part, self.frames_schema())
            result.outputs.append(self._rel(part))
        if summary.get("error"):
            result.status = "failed"
            result.error = f"{summary['error']} ({summary['frames_analysed']} frames before it were kept)"

    def _run_photo(self, job: Job, folder: Path, result: JobResult) -> None:
        import cv2

        from emolens.media import load_image
        from emolens.outputs import annotate_image, write_json

        analyzer = self.photo_analyzer()
        image = load_image(job.input, self.settings.max_pixels)
        found = analyzer.analyze_image(image)
        found.path = job.input
        paths = [folder / f"{job.stem}.json"]
        write_json([found.to_dict()], paths[0])
        if self.settings.annotate:
            paths.append(folder / f"{job.stem}.annotated.jpg")
            if not cv2.imwrite(str(paths[-1]), annotate_image(image, found.faces, bars=self.settings.bars)):
                raise OSError(f"could not write {paths[-1]}")
        result.frames = 1
        result.outputs = [self._rel(p) for p in paths]
        if self.settings.parquet:
            part = dataset.partitions(self.out_dir, job.stem)[0]
            dataset.write_atomic(dataset.photo_table(found.faces, self.frames_schema()), part)
            result.outputs.append(self._rel(part))

    def _run_audio(self, job: Job, folder: Path, result: JobResult) -> None:
        from emolens.media import MediaError
        from emolens.outputs import write_json

        found = self.audio_analyzer().analyze_file(job.input)
        if found.error:
            raise MediaError(found.error)
        path = folder / f"{job.stem}.audio.json"
        write_json([found.to_dict()], path)
        result.outputs = [self._rel(path)]
        if self.settings.parquet:
            part = dataset.partitions(self.out_dir, job.stem)[1]
            labels = list(self.audio_analyzer().model.labels)
            dataset.write_atomic(dataset.segments_table(found.segments, labels), part)
            result.outputs.append(self._rel(part))
