"""The live WebSocket (``/api/live``): frames in, faces out; a frame that arrives while the
analyser is busy replaces the waiting one (dropped, never queued)."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import HTTPException, WebSocket, WebSocketDisconnect

from emolens.server.services import Services


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
            except HTTPException as exc:  # too large (checked from the header) or unreadable
                await send({"seq": seq, "error": exc.detail})
                continue
            except Exception:  # any other failure ends this frame only, never the session
                logging.getLogger("emolens.server").exception("live frame %d failed", seq)
                await send({"seq": seq, "error": "this frame could not be analysed (internal error)"})
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
