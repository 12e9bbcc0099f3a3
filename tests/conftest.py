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


def pytest_configure(config: pytest.Config) -> None:
    """Servers started by the tests keep their jobs in a temporary folder, never the user's cache."""
    import os
    import tempfile

    if "EMOLENS_JOBS_DIR" not in os.environ:
        config._emolens_jobs = tempfile.mkdtemp(prefix="emolens-test-jobs-")  # type: ignore[attr-defined]
        os.environ["EMOLENS_JOBS_DIR"] = config._emolens_jobs  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove that folder again."""
    import shutil

    folder = getattr(config, "_emolens_jobs", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


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
