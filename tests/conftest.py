"""Shared test fixtures: paths into ../shared, skipped with a clear reason when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"
FER_CSV = SHARED / "data" / "fer2013" / "fer2013.csv.xz"
FERPLUS_CSV = SHARED / "data" / "fer2013" / "fer2013new.csv"
RAVDESS = SHARED / "data" / "ravdess_speech"


def need(path: Path) -> Path:
    """Return ``path`` or skip the test, naming what is missing."""
    if not path.exists():
        pytest.skip(f"needs {path} (the ../shared data folder next to the repo)")
    return path


@pytest.fixture(scope="session")
def media() -> Path:
    """../shared/media."""
    return need(MEDIA)


@pytest.fixture(scope="session")
def fer_csv() -> Path:
    """../shared/data/fer2013/fer2013.csv.xz."""
    return need(FER_CSV)


@pytest.fixture(scope="session")
def ferplus_csv() -> Path:
    """../shared/data/fer2013/fer2013new.csv."""
    return need(FERPLUS_CSV)


@pytest.fixture(scope="session")
def ravdess() -> Path:
    """../shared/data/ravdess_speech."""
    return need(RAVDESS)
