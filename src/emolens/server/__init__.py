"""Web app and REST API (``emolens serve``; needs the ``server`` extra: FastAPI, uvicorn).

See :mod:`emolens.server.app` for the routes, :mod:`emolens.server.jobs` for video jobs,
:mod:`emolens.server.live` for the live WebSocket, :mod:`emolens.server.running` for uvicorn.
"""

from __future__ import annotations

from emolens.server.app import create_app
from emolens.server.config import ServerConfig, default_jobs_dir
from emolens.server.running import running_server, serve, uvicorn_config

__all__ = ["ServerConfig", "create_app", "default_jobs_dir", "running_server", "serve", "uvicorn_config"]
