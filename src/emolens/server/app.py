"""The FastAPI app: REST API (photo, audio, video jobs), live WebSocket, and the web page.

>>> from emolens.server import ServerConfig, create_app
>>> app = create_app(ServerConfig(jobs_dir="jobs/"))     # uvicorn.run(app) or `emolens serve`

The face analyzer is loaded once at startup and shared; every CPU-bound call runs in a thread
pool of ``workers`` threads, so the event loop keeps answering (health checks, progress polls,
WebSocket traffic) while photos are analysed. Video jobs run one at a time in a worker thread
(:mod:`emolens.server.jobs`).

Access control (:mod:`emolens.server.security`): only the allowed ``Host`` names are served, a
POST/DELETE or WebSocket handshake from another site's page (``Origin``) is refused, and with
``tokens`` set every ``/api/`` request needs one and sees only the jobs its token created.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
from fastapi import FastAPI, HTTPException, Request, Response, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from emolens.media import DEFAULT_MAX_VIDEO_PIXELS, expected_frames
from emolens.server.config import ServerConfig, default_jobs_dir
from emolens.server.explain import add_explain_route, form_fields, model_methods
from emolens.server.jobs import (
    GB,
    RESULT_FILES,
    QuotaError,
    api_message,
    valid_job_id,
)
from emolens.server.live import live_session
from emolens.server.security import (
    OWNER_KEY,
    AccessGuard,
)
from emolens.server.services import Services, decode_image
from emolens.server.uploads import Upload, check_kind, declared_size, receive_upload

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("emolens.server")


def owner_of(request: Request) -> str | None:
    """The owner id of a request (a hash of its token; None when the server runs without tokens)."""
    return request.scope.get(OWNER_KEY)


def visible(services: Services, job: Any, owner: str | None) -> bool:
    """True when ``owner`` may see ``job``: always without tokens, else only the creator's token."""
    return not services.config.tokens or job.owner == owner


def _job_or_404(services: Services, job_id: str, owner: str | None = None) -> Any:
    if not valid_job_id(job_id):
        raise HTTPException(404, f"no such job: {job_id[:60]!r} (job ids are UUIDs)")
    missing = HTTPException(404, f"no such job: {job_id} (finished jobs are removed after "
                                 f"{services.config.keep_jobs_hours:g} hours, or when the jobs folder is full)")
    try:
        job = services.jobs.get(job_id)
    except KeyError:
        raise missing from None
    if not visible(services, job, owner):
        raise missing
    return job


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


#: Limits of the integer job options (inclusive), used by the validation and the OpenAPI schema.
INT_OPTIONS = {"every": (1, 1000), "max_frames": (1, 10_000_000), "detect_every": (1, 100)}
MAX_FPS = 1000.0
SMOOTHING = ("ema", "window", "none")
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def job_options(fields: dict[str, str]) -> dict:
    """Video options from the upload form: ``every``, ``max_frames``, ``detect_every``, ``fps``,
    ``smooth``, ``annotate`` (validated; 422 on bad values, NaN and infinities included)."""
    from emolens.video import VideoOptions

    opts: dict[str, Any] = {}
    for name, (lo, hi) in INT_OPTIONS.items():
        if (value := _int_field(fields, name, lo, hi)) is not None:
            opts[name] = value
    if (text := fields.get("fps", "").strip()):
        try:
            fps = float(text)
        except ValueError:
            raise HTTPException(422, f"fps must be a number, got {text[:20]!r}") from None
        if not math.isfinite(fps) or not 0 < fps <= MAX_FPS:
            raise HTTPException(422, f"fps must be a finite number above 0 and at most {MAX_FPS:g}, got {text[:20]!r}")
        opts["fps"] = fps
    if (smooth := fields.get("smooth", "").strip()):
        if smooth not in SMOOTHING:
            raise HTTPException(422, f"smooth must be one of {', '.join(SMOOTHING)}, got {smooth[:20]!r}")
        opts["smooth"] = smooth
    try:
        VideoOptions(**opts)
    except (ValueError, TypeError) as exc:  # its messages name CLI flags: say the form fields' names
        raise HTTPException(422, api_message(str(exc))) from None
    annotate = fields.get("annotate", "true").strip().lower() or "true"
    if annotate not in TRUE_WORDS + FALSE_WORDS:
        raise HTTPException(422, f"annotate must be true or false, got {annotate[:20]!r}")
    opts["annotate"] = annotate in TRUE_WORDS
    return opts


def _upload_doc(kind: str, extra: dict | None = None) -> dict:
    """OpenAPI request body of an upload route (the docs page shows a file picker)."""
    props = {"file": {"type": "string", "format": "binary", "description": f"the {kind} file"}, **(extra or {})}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": props}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }}}


ERROR_SCHEMA = {"type": "object", "required": ["detail"], "properties": {
    "detail": {"type": "string"},
    "id": {"type": "string", "description": "500 only: the id under which the server logged the error"}}}
ERROR_TEXT = {
    400: "bad request: a Host name this server does not serve (--allowed-hosts), a malformed body, "
         "or a file in a form field other than `file`",
    401: "an access token is missing or wrong (the server runs with --token)",
    403: "cross-origin request refused: its Origin is neither this server nor one of --allowed-origins",
    404: "no such job (or it belongs to another token)",
    408: "the request body stopped arriving (the server closes such requests after a few seconds)",
    409: "the job has not finished (or failed)",
    413: "upload too large",
    415: "wrong file type (declared or detected from the content)",
    422: "invalid parameter, or a corrupt or unreadable file",
    500: "internal error: logged on the server; the answer carries only its `id`",
    501: "not available in this build",
    503: "the job queue is full, or the speech model is not installed",
    507: "no room for the upload in the jobs folder (--max-jobs-disk-gb)",
}
READ, WRITE, UPLOAD = (400, 401, 500), (400, 401, 403, 500), (400, 401, 403, 408, 413, 415, 422, 500)


def errors(*codes: int) -> dict:
    """OpenAPI ``responses`` of these error codes (JSON ``{"detail": message}``)."""
    return {code: {"description": ERROR_TEXT[code], "content": {"application/json": {"schema": ERROR_SCHEMA}}}
            for code in sorted(set(codes))}


JOB_FIELDS = {
    **{name: {"type": "integer", "minimum": lo, "maximum": hi, "description": text}
       for (name, (lo, hi)), text in zip(INT_OPTIONS.items(), ("analyse every N-th frame",
                                                                 "stop after this many analysed frames",
                                                                 "detect faces every N analysed frames"))},
    "fps": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_FPS,
            "description": "analyse at most F frames per second (instead of every); a finite number"},
    "smooth": {"type": "string", "enum": list(SMOOTHING)},
    "annotate": {"type": "boolean", "default": True, "description": "write the annotated MP4"},
}


# ------------------------------------------------------------------------------------- the app


def create_app(config: ServerConfig | None = None, analyzer: Any = None) -> FastAPI:
    """The emolens web app. ``analyzer``: a ready :class:`~emolens.api.FaceAnalyzer` (default: built
    at startup from ``config``)."""
    config = config or ServerConfig()
    from emolens import __version__

    tokens = [t for t in config.tokens if t]

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
    app.state.config = config
    _docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(HideInternalErrors)
    app.add_middleware(AccessGuard, allowed_hosts=config.hosts(), allowed_origins=config.allowed_origins,
                       tokens=tokens)
    if tokens:
        _document_tokens(app)

    def svc(request: Request | WebSocket) -> Services:
        return request.app.state.services

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
                 for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(parts)[:500] or "invalid request"}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/health", tags=["info"], responses=errors(*READ))
    async def health(request: Request) -> dict:
        """Liveness and what this server can do (features, limits, counts of your jobs)."""
        s = svc(request)
        code, message = s.audio_status()
        jobs = [j for j in s.jobs.list() if visible(s, j, owner_of(request))]
        c = config
        return {"status": "ok", "version": __version__, "labels": list(s.analyzer.model.labels),
                "features": {"image": True, "live": True, "video": s.video_status()[0] == 200, "audio": code == 200},
                "audio_message": None if code == 200 else message,
                "explain_methods": model_methods(s.analyzer.model),
                "limits": {"image_bytes": c.max_image_bytes, "audio_bytes": c.max_audio_bytes,
                           "video_bytes": c.max_video_bytes, "frame_bytes": c.max_frame_bytes,
                           "jobs_disk_bytes": int(c.max_jobs_disk_gb * GB), "keep_jobs_hours": c.keep_jobs_hours},
                "token_required": bool(tokens),
                "jobs": {st: sum(j.status == st for j in jobs) for st in ("queued", "running", "done", "failed")}}

    @app.post("/api/image", tags=["photo"], openapi_extra=_upload_doc("image"), responses=errors(*UPLOAD))
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
              responses={200: {"description": "the annotated photo",
                               "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                         **errors(*UPLOAD)}, response_class=Response)
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

    add_explain_route(app, _upload_doc("image", form_fields()), errors(*UPLOAD))  # POST /api/explain

    @app.post("/api/audio", tags=["audio"], openapi_extra=_upload_doc("audio (or video)"),
              responses=errors(*UPLOAD, 501, 503, 507))
    async def analyze_audio(request: Request) -> dict:
        """Emotion in speech: the JSON of ``emolens audio`` for one file
        (``{"path", "label", "probs", "segments": [{"start_s", "end_s", "label", "probs"}], "error"}``)."""
        s = svc(request)
        code, message = s.audio_status()
        if code != 200:
            raise HTTPException(code, message)
        need = declared_size(request, config.max_audio_bytes)
        job_id, folder = s.jobs.new_folder()  # a scratch job folder, removed when the answer is ready
        try:
            await _reserve(s, job_id, need)
            upload = await receive_upload(request, config.max_audio_bytes, folder / "upload.part")
            check_kind(upload, "audio")
            path = upload.path.rename(folder / f"input{upload.suffix}")  # type: ignore[union-attr]
            result = await s.run(s.analyze_audio, path, upload.filename)
        finally:
            s.jobs.release(job_id)
            shutil.rmtree(folder, ignore_errors=True)
        if result.get("error"):
            raise HTTPException(422, api_message(result["error"]))
        return result

    @app.post("/api/jobs", tags=["video"], status_code=202, openapi_extra=_upload_doc("video", JOB_FIELDS),
              responses=errors(*UPLOAD, 501, 503, 507))
    async def create_job(request: Request) -> dict:
        """Queue a video for analysis; poll ``GET /api/jobs/{id}`` for progress, then fetch the result."""
        from emolens.media import MediaError, MediaTooLarge, VideoSource

        s = svc(request)
        code, message = s.video_status()
        if code != 200:
            raise HTTPException(code, message)
        need = declared_size(request, config.max_video_bytes)
        job_id, folder = s.jobs.new_folder()
        try:
            await _reserve(s, job_id, need)
            upload: Upload = await receive_upload(request, config.max_video_bytes, folder / "upload.part")
            check_kind(upload, "video")
            options = job_options(upload.fields)
            path = upload.path.rename(folder / f"input{upload.suffix}")  # type: ignore[union-attr]

            def probe() -> Any:  # refuses frames above the limit from the metadata, before decoding
                with VideoSource(path, threaded=False, max_pixels=config.max_video_pixels) as src:
                    return src.info

            try:
                info = await s.run(probe)
            except MediaError as exc:
                status = 413 if isinstance(exc, MediaTooLarge) else 422
                raise HTTPException(status, str(exc).replace(str(path), upload.filename)) from None
            if config.max_video_pixels != DEFAULT_MAX_VIDEO_PIXELS:  # the job's decoder keeps the same limit
                options["max_video_pixels"] = config.max_video_pixels
            total = expected_frames(info, options.get("every", 1), options.get("fps"), options.get("max_frames"))
            try:
                job = s.jobs.submit(job_id, upload.filename, path.name, options, total, owner=owner_of(request))
            except OverflowError as exc:
                raise HTTPException(503, str(exc)) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            s.jobs.release(job_id)
        return job.public()

    @app.get("/api/jobs", tags=["video"], responses=errors(*READ))
    async def list_jobs(request: Request) -> list[dict]:
        """The jobs kept on this server (with tokens on: the jobs of your token), newest first."""
        s = svc(request)
        return [j.public() for j in s.jobs.list() if visible(s, j, owner_of(request))]

    @app.get("/api/jobs/{job_id}", tags=["video"], responses=errors(*READ, 404, 422))
    async def get_job(request: Request, job_id: str) -> dict:
        """Status and progress (frames done / total) of a job, with links to its results."""
        return _job_or_404(svc(request), job_id, owner_of(request)).public()

    def _finished(request: Request, job_id: str) -> Any:
        job = _job_or_404(svc(request), job_id, owner_of(request))
        if job.status != "done":
            what = f"failed: {job.error}" if job.status == "failed" else f"is {job.status}"
            raise HTTPException(409, f"job {job_id} {what}; results exist only for finished jobs")
        return job

    @app.get("/api/jobs/{job_id}/result", tags=["video"], responses=errors(*READ, 404, 409, 422))
    async def job_result(request: Request, job_id: str) -> dict:
        """The video summary: tracks with per-track decisions, the fused video decision
        (``label_sum``, ``label_vote``), and the voice of the sound track when a speech model exists."""
        job = _finished(request, job_id)
        return await anyio.to_thread.run_sync(svc(request).jobs.summary, job)

    @app.get("/api/jobs/{job_id}/timeline", tags=["video"], responses=errors(*READ, 404, 422))
    async def job_timeline(request: Request, job_id: str) -> dict:
        """Per-person (track) emotion probabilities over time, for charts (also while running)."""
        s = svc(request)
        return await anyio.to_thread.run_sync(s.jobs.timeline, _job_or_404(s, job_id, owner_of(request)))

    @app.get("/api/jobs/{job_id}/files/{name}", tags=["video"], response_class=FileResponse,
             responses={200: {"description": "the file", "content": {
                 media: {"schema": {} if media == "application/json" else {"type": "string"}}
                 for _, media in RESULT_FILES.values()}},
                 **errors(*READ, 404, 409, 422)})
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
                responses=errors(*WRITE, 404, 422))
    async def delete_job(request: Request, job_id: str) -> Response:
        """Delete a job and its folder (a running job is stopped first)."""
        s = svc(request)
        _job_or_404(s, job_id, owner_of(request))
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


async def _reserve(s: Services, job_id: str, nbytes: int) -> None:
    """Book ``nbytes`` of the jobs folder's quota for an upload; 507 when it does not fit."""
    try:
        await anyio.to_thread.run_sync(s.jobs.reserve, job_id, nbytes)
    except QuotaError as exc:
        raise HTTPException(507, str(exc)) from None


class HideInternalErrors:
    """ASGI middleware: an unexpected exception is logged with a short id and answered
    ``500 {"detail": "internal error", "id": id}`` (no library internals in the answer)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            error_id = uuid.uuid4().hex[:8]
            log.exception("internal error %s on %s %s", error_id, scope.get("method"), scope.get("path"))
            if started:  # too late for an answer: uvicorn closes the connection
                raise
            await JSONResponse({"detail": "internal error", "id": error_id}, status_code=500)(scope, receive, send)


def _document_tokens(app: FastAPI) -> None:
    """Declare the access token in the OpenAPI schema (bearer or ``X-Emolens-Token``)."""
    from fastapi.openapi.utils import get_openapi

    def schema() -> dict:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            spec.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "header": {"type": "apiKey", "in": "header", "name": "X-Emolens-Token"}}
            for path, item in spec.get("paths", {}).items():
                if path.startswith("/api/"):
                    for operation in item.values():
                        operation["security"] = [{"bearer": []}, {"header": []}]
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]


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


__all__ = ["ServerConfig", "Services", "create_app", "decode_image", "default_jobs_dir"]
