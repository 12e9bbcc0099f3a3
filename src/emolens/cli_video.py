"""``emolens`` commands for the video pipeline (registered by :mod:`emolens.cli`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer, train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
