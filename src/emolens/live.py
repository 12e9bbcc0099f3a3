"""Live overlay of a camera, stream or file: a window where a display exists, otherwise an MJPEG
preview on localhost (``emolens live``)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import numpy as np

from emolens.video import VideoAnalyzer, VideoOptions, sampled_fps


def has_display() -> bool:
    """True when OpenCV can open a window here (a GUI build of OpenCV and a display)."""
    import sys

    import cv2

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("emolens-probe", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("emolens-probe")
        return True
    except cv2.error:
        return False


class MjpegServer:
    """A tiny MJPEG preview server: ``/`` (page), ``/stream`` (multipart MJPEG), ``/frame.jpg``.

    Bound to ``host`` (127.0.0.1 by default: not reachable from other machines); ``port=0``
    picks a free port. Frames are JPEG-encoded only when a client asks for them.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, quality: int = 80) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.quality = quality
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._seq = 0
        self._stopped = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/stream"):
                    self._stream()
                elif self.path.startswith("/frame.jpg"):
                    jpeg = server.wait_jpeg(0, timeout=5.0)[1]
                    if jpeg is None:
                        self.send_error(503, "no frame yet")
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(jpeg)))
                    self.end_headers()
                    self.wfile.write(jpeg)
                else:
                    body = b"<html><body style='margin:0;background:#111'><img src='/stream' style='max-width:100%'>" \
                           b"</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                seq = 0
                try:
                    while True:
                        seq, jpeg = server.wait_jpeg(seq, timeout=1.0)
                        if server._stopped:
                            return
                        if jpeg is None:
                            continue
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    return

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="emolens-mjpeg", daemon=True)

    @property
    def url(self) -> str:
        """Where to look: ``http://host:port/``."""
        return f"http://{self.host}:{self.port}/"

    def start(self) -> MjpegServer:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def publish(self, image: np.ndarray) -> None:
        """Make ``image`` (BGR) the current frame."""
        with self._cond:
            self._image, self._seq = image, self._seq + 1
            self._cond.notify_all()

    def wait_jpeg(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """The newest frame after sequence number ``after`` as JPEG (None on timeout/stop)."""
        import cv2

        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self._stopped, timeout=timeout)
            if self._stopped or self._image is None or self._seq <= after:
                return after, None
            seq, image = self._seq, self._image
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        return seq, buf.tobytes() if ok else None

    def stop(self) -> None:
        """Stop serving and close the socket (open streams end)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()


def run_live(
    source: str | int,
    options: VideoOptions | None = None,
    csv_path: str | os.PathLike | None = None,
    window: bool | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    realtime: bool = True,
    on_ready: Callable[[str], None] | None = None,
    analyzer: VideoAnalyzer | None = None,
    bars: bool = True,
) -> dict:
    """Real-time overlay of a camera, stream or file: a window where a display exists
    (``window=None``: auto), otherwise an MJPEG preview on ``host:port``. Stops on ``q``/Esc
    in the window, Ctrl-C, the end of the source, or ``options.max_frames``. ``realtime`` paces
    files to their own clock. ``csv_path`` gets the same rows as ``emolens video``; ``bars``: draw
    probability bars.

    Returns ``{"frames", "fps", "stopped", "preview"}``.
    """
    import cv2

    from emolens.annotate import draw_hud
    from emolens.outputs import draw_tracked
    from emolens.sinks import CsvSink

    analyzer = analyzer or VideoAnalyzer(options)
    o = analyzer.options
    src = analyzer.source(source)
    show = has_display() if window is None else window
    server = None if show else MjpegServer(host, port).start()
    preview = server.url if server is not None else "window"
    if on_ready:
        on_ready(preview)
    sink = CsvSink(csv_path) if csv_path else None
    if sink is not None:
        sink.open(analyzer.labels, (), sampled_fps(src.info.fps, o))
    pace = realtime and not src.info.is_live
    n, fps, stopped = 0, 0.0, "end of source"
    start = last = time.perf_counter()
    try:
        for result in analyzer.process(src):
            frame = result.frame
            if pace:
                delay = start + frame.time_s - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            now = time.perf_counter()
            fps = 0.9 * fps + 0.1 / max(now - last, 1e-6) if n else 0.0
            last, n = now, n + 1
            if sink is not None:
                sink.write(result)
            image = draw_tracked(frame.image, result.faces, bars)
            draw_hud(image, f"{fps:.1f} FPS  {len(result.faces)} face(s)  t={frame.time_s:.1f}s")
            if server is not None:
                server.publish(image)
            else:
                cv2.imshow("emolens live (q to quit)", image)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    stopped = "q pressed"
                    break
        else:
            if o.max_frames and n >= o.max_frames:
                stopped = "max frames reached"
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        src.close()
        if sink is not None:
            sink.close()
        if server is not None:
            server.stop()
        else:
            cv2.destroyAllWindows()
    elapsed = time.perf_counter() - start
    return {"frames": n, "fps": round(n / elapsed, 2) if elapsed > 0 else None, "stopped": stopped, "preview": preview}
