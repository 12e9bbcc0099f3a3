"""Web app and REST API (``emolens serve``; needs the ``server`` extra: FastAPI, uvicorn).

See :mod:`emolens.server.app` for the routes, :mod:`emolens.server.jobs` for video jobs.
"""

from __future__ import annotations

from emolens.server.app import ServerConfig, create_app, default_jobs_dir, running_server, serve

__all__ = ["ServerConfig", "create_app", "default_jobs_dir", "running_server", "serve"]
