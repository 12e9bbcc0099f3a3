"""The FastAPI app: REST API (photo, audio, video jobs), live WebSocket, and the web page.

>>> from emolens.server import ServerConfig, create_app
>>> app = create_app(ServerConfig(jobs_dir="jobs/"))     # uvicorn.run(app) or `emolens serve`

The face analyzer is loaded once at startup and shared; every CPU-bound call runs in a thread
pool of ``workers`` threads, so the event loop keeps answering (health checks, progress polls,
WebSocket traffic) while photos are analysed. Video jobs run one at a time in a worker thread
(:mod:`emolens.server.jobs`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from emolens.server.jobs import RESULT_FILES, JobManager, expected_frames, valid_job_id
from emolens.server.uploads import Upload, check_kind, receive_upload

STATIC = Path(__file__).parent / "static"
MB = 1_000_000


def default_jobs_dir() -> Path:
    """``$EMOLENS_JOBS_DIR``, else ``<user cache>/emolens/jobs`` (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    if os.environ.get("EMOLENS_JOBS_DIR"):
        return Path(os.environ["EMOLENS_JOBS_DIR"])
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "emolens" / "jobs"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emolens" / "jobs"


@dataclass
class ServerConfig:
    """Settings of the server (the ``emolens serve`` options)."""

    jobs_dir: Path = field(default_factory=default_jobs_dir)
    max_image_bytes: int = 25 * MB
    max_audio_bytes: int = 100 * MB
    max_video_bytes: int = 1000 * MB
    max_frame_bytes: int = 2 * MB  #: one live WebSocket frame (JPEG)
    max_pixels: int = 80_000_000  #: decoded photo size limit (width x height)
    workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    max_queued_jobs: int = 16
    detector: str = "yunet"
    min_score: float = 0.6
    model: str = "default"  #: face model: registry name or .onnx path


# ------------------------------------------------------------------------------------- analysis


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """BGR image from encoded bytes (EXIF orientation applied); 422 if it cannot be decoded."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise HTTPException(422, "not a readable image (corrupt, truncated or an unsupported format)")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise HTTPException(413, f"image too large: {image.shape[1]}x{image.shape[0]} pixels "
                                 f"(limit {max_pixels / 1e6:.0f} megapixels)")
    return image


class Services:
    """What the routes share: the face analyzer, the thread-pool limiter, the audio analyzer
    (loaded on first use) and the video jobs."""

    def __init__(self, config: ServerConfig, analyzer: Any = None) -> None:
        import cv2

        from emolens.api import FaceAnalyzer
        from emolens.expression import ExpressionModel

        # One thread per call everywhere (OpenCV, yuface's OpenMP, onnxruntime): parallelism comes from
        # the worker pool, and spinning helper threads make a busy machine much slower.
        self._cv2_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        self.config = config
        self.analyzer = analyzer or FaceAnalyzer(config.detector, ExpressionModel(config.model, threads=1),
                                                 min_score=config.min_score)
        self.limiter = anyio.CapacityLimiter(config.workers)
        self._audio: Any = None
        self._audio_lock = threading.Lock()
        self.jobs = JobManager(config.jobs_dir, config.max_queued_jobs, model=config.model, voice=self.voice_of_video,
                               thread_init=self._one_omp_thread)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a CPU-bound call in the worker pool."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    @staticmethod
    def _one_omp_thread() -> None:
        """Limit yuface's OpenMP to one thread in the calling thread (a per-thread setting)."""
        from emolens.faces import limit_detector_threads

        limit_detector_threads(1)

    def analyze_bytes(self, data: bytes) -> tuple[list, tuple[int, int]]:
        """Faces in an encoded image: ``(face results, (width, height))``."""
        self._one_omp_thread()
        image = decode_image(data, self.config.max_pixels)
        return self.analyzer.analyze_frame(image), (image.shape[1], image.shape[0])

    def close(self) -> None:
        """Stop the job worker; give OpenCV its threads back (matters when the app runs in-process)."""
        import cv2

        self.jobs.stop()
        cv2.setNumThreads(self._cv2_threads)

    @staticmethod
    def video_status() -> tuple[int, str]:
        """``(200, "ok")``, or 501 and why video jobs are unavailable."""
        try:
            from emolens.video import VideoAnalyzer, VideoOptions  # noqa: F401
        except ImportError as exc:
            return 501, f"video analysis is not available in this build (emolens.video: {exc})"
        return 200, "ok"

    # -- speech (the voice module may be unfinished: 501 / 503 say so) -----------------------------
    @staticmethod
    def audio_status() -> tuple[int, str]:
        """``(200, "ok")``, or the HTTP status and message that explain why audio is unavailable."""
        try:
            from emolens import voice
        except ImportError as exc:
            return 501, f"speech analysis is not available in this build (emolens.voice: {exc})"
        if not hasattr(voice, "AudioAnalyzer"):
            return 501, "speech analysis is not implemented yet (emolens.voice.AudioAnalyzer is missing)"
        model = getattr(voice, "DEFAULT_SPEECH_MODEL", None)
        if model is not None and not Path(model).is_file():
            return 503, f"the speech-emotion model is not installed ({Path(model).name} missing)"
        return 200, "ok"

    def analyze_audio(self, path: Path, name: str) -> dict:
        """The ``emolens audio`` result of one file, with ``path`` set to the uploaded ``name``."""
        from emolens.voice import AudioAnalyzer

        with self._audio_lock:  # the VAD keeps state: one file at a time
            if self._audio is None:
                self._audio = AudioAnalyzer()
            result = self._audio.analyze_file(path)
        out = result.to_dict()
        out["path"] = name
        if out.get("error"):
            out["error"] = out["error"].replace(str(path), name)
        return out

    def voice_of_video(self, path: Path) -> dict | None:
        """Speech emotion of a video's sound track for the job summary (None when unavailable)."""
        if self.audio_status()[0] != 200:
            return None
        result = self.analyze_audio(path, path.name)
        result.pop("path", None)
        return result


def _job_or_404(services: Services, job_id: str) -> Any:
    if not valid_job_id(job_id):
        raise HTTPException(404, f"no such job: {job_id[:60]!r} (job ids are UUIDs)")
    try:
        return services.jobs.get(job_id)
    except KeyError:
        raise HTTPException(404, f"no such job: {job_id} (finished jobs are kept until deleted)") from None


def _int_field(fields: dict[str, str], name: str, lo: int, hi: int) -> int | None:
    value = fields.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise HTTPException(422, f"{name} must be an integer, got {value[:20]!r}") from None
    if not lo <= number <= hi:
        raise HTTPException(422, f"{name} must be between {lo} and {hi}")
    return number


def job_options(fields: dict[str, str]) -> dict:
    """Video options from the upload form: ``every``, ``max_frames``, ``detect_every``, ``fps``,
    ``smooth``, ``annotate`` (validated; 422 on bad values)."""
    from emolens.video import VideoOptions

    opts: dict[str, Any] = {}
    for name, hi in (("every", 1000), ("max_frames", 10_000_000), ("detect_every", 100)):
        if (value := _int_field(fields, name, 1, hi)) is not None:
            opts[name] = value
    if fields.get("fps", "").strip():
        try:
            opts["fps"] = float(fields["fps"])
        except ValueError:
            raise HTTPException(422, "fps must be a number") from None
    if fields.get("smooth", "").strip():
        opts["smooth"] = fields["smooth"].strip()
    try:
        VideoOptions(**opts)
    except (ValueError, TypeError) as exc:
        raise HTTPException(422, str(exc)) from None
    opts["annotate"] = fields.get("annotate", "true").strip().lower() not in ("0", "false", "no", "off")
    return opts


def _upload_doc(kind: str, extra: dict | None = None) -> dict:
    """OpenAPI request body of an upload route (the docs page shows a file picker)."""
    props = {"file": {"type": "string", "format": "binary", "description": f"the {kind} file"}, **(extra or {})}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": props}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }}}


ERRORS = {code: {"description": text, "content": {"application/json": {"example": {"detail": text}}}}
          for code, text in ((413, "upload too large"), (415, "wrong file type"), (422, "corrupt or unreadable"))}
JOB_FIELDS = {
    "every": {"type": "integer", "minimum": 1, "description": "analyse every N-th frame"},
    "max_frames": {"type": "integer", "minimum": 1, "description": "stop after this many analysed frames"},
    "detect_every": {"type": "integer", "minimum": 1, "description": "detect faces every N analysed frames"},
    "fps": {"type": "number", "description": "analyse at most F frames per second (instead of every)"},
    "smooth": {"type": "string", "enum": ["ema", "window", "none"]},
    "annotate": {"type": "boolean", "default": True, "description": "write the annotated MP4"},
}


# ------------------------------------------------------------------------------------- the app


def create_app(config: ServerConfig | None = None, analyzer: Any = None) -> FastAPI:
    """The emolens web app. ``analyzer``: a ready :class:`~emolens.api.FaceAnalyzer` (default: built
    at startup from ``config``)."""
    config = config or ServerConfig()
    from emolens import __version__

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        services = app.state.services = await anyio.to_thread.run_sync(Services, config, analyzer)
        services.jobs.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(services.close)

    app = FastAPI(title="emolens", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Emotion recognition from faces (photos, videos, live frames) and voices. "
                              "Errors are JSON: `{\"detail\": message}`.")
    _docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def svc(request: Request | WebSocket) -> Services:
        return request.app.state.services

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/health", tags=["info"])
    async def health(request: Request) -> dict:
        """Liveness and what this server can do (features, limits, job counts)."""
        s = svc(request)
        code, message = s.audio_status()
        jobs = s.jobs.list()
        c = config
        return {"status": "ok", "version": __version__, "labels": list(s.analyzer.model.labels),
                "features": {"image": True, "live": True, "video": s.video_status()[0] == 200, "audio": code == 200},
                "audio_message": None if code == 200 else message,
                "limits": {"image_bytes": c.max_image_bytes, "audio_bytes": c.max_audio_bytes,
                           "video_bytes": c.max_video_bytes, "frame_bytes": c.max_frame_bytes},
                "jobs": {st: sum(j.status == st for j in jobs) for st in ("queued", "running", "done", "failed")}}

    @app.post("/api/image", tags=["photo"], openapi_extra=_upload_doc("image"), responses=ERRORS)
    async def analyze_image(request: Request) -> dict:
        """Every face in a photo: the JSON of ``emolens image`` for one file
        (``{"path", "faces": [{"box", "score", "label", "probs"}], "error"}``) plus ``size`` [w, h]."""
        s = svc(request)
        upload = await receive_upload(request, config.max_image_bytes)
        check_kind(upload, "image")
        t0 = time.perf_counter()
        faces, size = await s.run(s.analyze_bytes, upload.data)
        return {"path": upload.filename, "faces": [f.to_dict() for f in faces], "error": None, "size": list(size),
                "time_ms": round(1000 * (time.perf_counter() - t0), 1)}

    @app.post("/api/image/annotated", tags=["photo"], openapi_extra=_upload_doc("image"),
              responses={200: {"content": {"image/jpeg": {}}}, **ERRORS}, response_class=Response)
    async def annotate_image(request: Request) -> Response:
        """The photo with boxes, labels and probability bars drawn on it (JPEG)."""
        import cv2

        from emolens.outputs import annotate_image as draw

        s = svc(request)
        upload = await receive_upload(request, config.max_image_bytes)
        check_kind(upload, "image")

        def work() -> bytes:
            image = decode_image(upload.data or b"", config.max_pixels)
            return cv2.imencode(".jpg", draw(image, s.analyzer.analyze_frame(image)), [cv2.IMWRITE_JPEG_QUALITY, 90])[1]

        return Response((await s.run(work)).tobytes(), media_type="image/jpeg")

    @app.post("/api/audio", tags=["audio"], openapi_extra=_upload_doc("audio (or video)"),
              responses={501: {"description": "speech module missing"}, 503: {"description": "no speech model"},
                         **ERRORS})
    async def analyze_audio(request: Request) -> dict:
        """Emotion in speech: the JSON of ``emolens audio`` for one file
        (``{"path", "label", "probs", "segments": [{"start_s", "end_s", "label", "probs"}], "error"}``)."""
        s = svc(request)
        code, message = s.audio_status()
        if code != 200:
            raise HTTPException(code, message)
        job_id, folder = s.jobs.new_folder()  # a scratch job folder, removed when the answer is ready
        try:
            upload = await receive_upload(request, config.max_audio_bytes, folder / "upload.part")
            check_kind(upload, "audio")
            path = upload.path.rename(folder / f"input{upload.suffix}")  # type: ignore[union-attr]
            result = await s.run(s.analyze_audio, path, upload.filename)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if result.get("error"):
            raise HTTPException(422, result["error"])
        return result

    @app.post("/api/jobs", tags=["video"], status_code=202, openapi_extra=_upload_doc("video", JOB_FIELDS),
              responses={503: {"description": "job queue full"}, **ERRORS})
    async def create_job(request: Request) -> dict:
        """Queue a video for analysis; poll ``GET /api/jobs/{id}`` for progress, then fetch the result."""
        from emolens.media import MediaError, VideoSource

        s = svc(request)
        code, message = s.video_status()
        if code != 200:
            raise HTTPException(code, message)
        job_id, folder = s.jobs.new_folder()
        try:
            upload: Upload = await receive_upload(request, config.max_video_bytes, folder / "upload.part")
            check_kind(upload, "video")
            options = job_options(upload.fields)
            path = upload.path.rename(folder / f"input{upload.suffix}")  # type: ignore[union-attr]

            def probe() -> Any:
                with VideoSource(path, threaded=False) as src:
                    return src.info

            try:
                info = await s.run(probe)
            except MediaError as exc:
                raise HTTPException(422, str(exc).replace(str(path), upload.filename)) from None
            total = expected_frames(info.frame_count, info.duration_s, info.fps, options)
            try:
                job = s.jobs.submit(job_id, upload.filename, path.name, options, total)
            except OverflowError as exc:
                raise HTTPException(503, str(exc)) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return job.public()

    @app.get("/api/jobs", tags=["video"])
    async def list_jobs(request: Request) -> list[dict]:
        """Every job kept on this server, newest first."""
        return [j.public() for j in svc(request).jobs.list()]

    @app.get("/api/jobs/{job_id}", tags=["video"], responses={404: {"description": "unknown job"}})
    async def get_job(request: Request, job_id: str) -> dict:
        """Status and progress (frames done / total) of a job, with links to its results."""
        return _job_or_404(svc(request), job_id).public()

    def _finished(request: Request, job_id: str) -> Any:
        job = _job_or_404(svc(request), job_id)
        if job.status != "done":
            what = f"failed: {job.error}" if job.status == "failed" else f"is {job.status}"
            raise HTTPException(409, f"job {job_id} {what}; results exist only for finished jobs")
        return job

    @app.get("/api/jobs/{job_id}/result", tags=["video"], responses={404: {}, 409: {"description": "not done"}})
    async def job_result(request: Request, job_id: str) -> dict:
        """The video summary: tracks with per-track decisions, the fused video decision
        (``label_sum``, ``label_vote``), and the voice of the sound track when a speech model exists."""
        job = _finished(request, job_id)
        return await anyio.to_thread.run_sync(svc(request).jobs.summary, job)

    @app.get("/api/jobs/{job_id}/timeline", tags=["video"], responses={404: {}})
    async def job_timeline(request: Request, job_id: str) -> dict:
        """Per-person (track) emotion probabilities over time, for charts (also while running)."""
        s = svc(request)
        return await anyio.to_thread.run_sync(s.jobs.timeline, _job_or_404(s, job_id))

    @app.get("/api/jobs/{job_id}/files/{name}", tags=["video"], response_class=FileResponse,
             responses={404: {}, 409: {}})
    async def job_file(request: Request, job_id: str,
                       name: Literal["frames.csv", "summary.json", "annotated.mp4"]) -> FileResponse:
        """Download a result: the per-frame CSV, the summary JSON or the annotated MP4."""
        job = _finished(request, job_id)
        path = svc(request).jobs.result_path(job_id, name)
        if not path.is_file():
            raise HTTPException(404, f"job {job_id} has no {name} (e.g. annotate was off)")
        stem = Path(job.filename).stem or "video"
        return FileResponse(path, media_type=RESULT_FILES[name][1], filename=f"{stem}.{name}")

    @app.delete("/api/jobs/{job_id}", tags=["video"], status_code=204, response_class=Response,
                responses={404: {}})
    async def delete_job(request: Request, job_id: str) -> Response:
        """Delete a job and its folder (a running job is stopped first)."""
        s = svc(request)
        _job_or_404(s, job_id)
        try:
            await anyio.to_thread.run_sync(s.jobs.delete, job_id)
        except KeyError:
            raise HTTPException(404, f"no such job: {job_id}") from None
        return Response(status_code=204)

    @app.websocket("/api/live")
    async def live(ws: WebSocket) -> None:
        """Live mode: send JPEG frames (binary messages); each gets one JSON answer, in order of
        processing: ``{"seq", "faces": [{"box", "score", "label", "probs"}], "size", "ms", "dropped"}``,
        or ``{"seq", "dropped": true}`` for a frame skipped because a newer one arrived while the
        server was busy (frames are dropped, never queued), or ``{"seq", "error"}``."""
        await live_session(ws, svc(ws))

    return app


async def live_session(ws: WebSocket, s: Services) -> None:
    """Serve one live WebSocket (see the ``/api/live`` route)."""
    await ws.accept()
    send_lock = asyncio.Lock()
    slot: list[tuple[int, bytes]] = []
    ready = asyncio.Event()
    stats = {"received": 0, "dropped": 0}

    async def send(obj: dict) -> None:
        async with send_lock:
            await ws.send_json(obj)

    async def receive() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                if (message.get("text") or "").strip() == "ping":
                    await send({"pong": True})
                continue
            stats["received"] += 1
            seq = stats["received"]
            if len(data) > s.config.max_frame_bytes:
                await send({"seq": seq, "error": f"frame too large (limit {s.config.max_frame_bytes} bytes)"})
                continue
            if slot:  # the analyser is busy and an older frame waits: drop the older one
                old, _ = slot.pop()
                stats["dropped"] += 1
                await send({"seq": old, "dropped": True})
            slot.append((seq, data))
            ready.set()

    async def process() -> None:
        while True:
            await ready.wait()
            ready.clear()
            if not slot:
                continue
            seq, data = slot.pop()
            t0 = time.perf_counter()
            try:
                faces, size = await s.run(s.analyze_bytes, data)
            except HTTPException as exc:
                await send({"seq": seq, "error": exc.detail})
                continue
            await send({"seq": seq, "faces": [f.to_dict() for f in faces], "size": list(size),
                        "ms": round(1000 * (time.perf_counter() - t0), 1), "dropped": stats["dropped"]})

    worker = asyncio.create_task(process())
    try:
        await receive()
    except WebSocketDisconnect:
        pass
    finally:
        worker.cancel()
        try:
            await worker
        except (asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            pass


def _docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from local files when ``fastapi-offline`` is installed
    (no CDN needed), else FastAPI's CDN-based pages."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    try:
        import importlib.resources

        assets = Path(str(importlib.resources.files("fastapi_offline") / "static"))
    except (ImportError, ModuleNotFoundError, TypeError):
        assets = None
    prefix = "/docs-assets"
    if assets is not None and (assets / "swagger-ui-bundle.js").is_file():
        app.mount(prefix, StaticFiles(directory=assets), name="docs-assets")
        swagger = {"swagger_js_url": f"{prefix}/swagger-ui-bundle.js", "swagger_css_url": f"{prefix}/swagger-ui.css",
                   "swagger_favicon_url": f"{prefix}/favicon.png"}
        redoc = {"redoc_js_url": f"{prefix}/redoc.standalone.js", "redoc_favicon_url": f"{prefix}/favicon.png"}
    else:
        swagger, redoc = {}, {}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="emolens API", **swagger)

    @app.get("/redoc", include_in_schema=False)
    async def redoc_page() -> Response:
        return get_redoc_html(openapi_url="/openapi.json", title="emolens API", with_google_fonts=False, **redoc)


# ------------------------------------------------------------------------------------- running


def serve(config: ServerConfig | None = None, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Run the app with uvicorn until Ctrl-C."""
    import uvicorn

    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, ws_max_size=16 * MB)


@contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread (port 0: a free one); yields its base URL
    and stops the server on exit. For tests and benchmarks."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", ws_max_size=16 * MB,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="emolens-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the emolens server did not start")
        time.sleep(0.05)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


__all__ = ["ServerConfig", "create_app", "default_jobs_dir", "running_server", "serve"]
