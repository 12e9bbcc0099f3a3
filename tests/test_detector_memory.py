"""The face detector's memory stays flat over many calls, and the leak-free call gives the very
faces the ``yuface`` binding gives (the binding leaks a 36 KB result buffer per call)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from emolens.faces import YuNetDetector, _facedetect_cnn, _yunet_raw, make_detector

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "astronaut.jpg"
MB = 1_000_000


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc to read RSS")
def test_detector_memory_is_flat_over_20000_calls() -> None:
    """20,000 calls on a 64x64 image (about 8 s on 2 busy cores) grow RSS by less than 20 MB;
    the leaking binding grew it by ~720 MB (36 KB per call)."""
    detector = YuNetDetector()
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for _ in range(300):  # warm-up: allocator pools, OpenMP, the network's buffers
        detector.detect(image)
    before = rss_bytes()
    t0 = time.perf_counter()
    for _ in range(20_000):
        detector.detect(image)
    elapsed = time.perf_counter() - t0
    growth = rss_bytes() - before
    assert growth < 20 * MB, f"RSS grew by {growth / MB:.1f} MB over 20,000 calls"
    assert elapsed < 240, elapsed


def test_direct_call_matches_the_binding(media: Path) -> None:
    """Same boxes, scores and landmarks as ``yuface.detect`` (on this platform's direct entry point)."""
    import cv2
    import yuface

    if _facedetect_cnn() is None:
        pytest.skip("no direct libfacedetection entry point on this platform (the binding is used)")
    paths = [SAMPLE, *sorted((media / "photos").glob("*.*"))]
    for path in paths:
        image = cv2.imread(str(path))
        scale = min(1.0, 640 / max(image.shape[:2]))
        small = np.ascontiguousarray(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
        confs, boxes, marks = yuface.detect(small, conf=0.0)
        want = np.concatenate([confs[:, None], boxes, marks], axis=1)
        assert np.array_equal(_yunet_raw(small), want), path.name


def test_only_working_detectors_are_offered() -> None:
    assert isinstance(make_detector("yunet"), YuNetDetector)
    for name in ("haar", "foo"):
        with pytest.raises(ValueError, match="yunet"):
            make_detector(name)
