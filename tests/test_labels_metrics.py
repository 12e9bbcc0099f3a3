"""Label vocabulary and metrics."""

from __future__ import annotations

import numpy as np
import pytest

from emolens.labels import FER7, RAVDESS8, fold_probs, normalize_label, probs_dict
from emolens.metrics import classification_report, format_report


def test_vocabulary_orders() -> None:
    assert FER7 == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert set(RAVDESS8) - set(FER7) == {"calm"}


def test_normalize_label_aliases() -> None:
    assert normalize_label("Happiness") == "happy"
    assert normalize_label(" surprised ") == "surprise"
    with pytest.raises(ValueError, match="unknown emotion"):
        normalize_label("bored")


def test_probs_dict_and_fold() -> None:
    d = probs_dict([0.1, 0, 0, 0.6, 0, 0, 0.3])
    assert list(d) == list(FER7) and d["happy"] == 0.6
    with pytest.raises(ValueError):
        probs_dict([0.5, 0.5])
    folded = fold_probs({"calm": 0.25, "neutral": 0.25, "happy": 0.5})
    assert folded["neutral"] == 0.5 and folded["happy"] == 0.5 and sum(folded.values()) == pytest.approx(1)


def test_classification_report_known_values() -> None:
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    r = classification_report(y, p, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(0.6)
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert r["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert r["per_class"]["a"]["recall"] == pytest.approx(0.5)
    # macro-F1 over classes present in y: a (0.5), b (0.8), c (0)
    assert r["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert "confusion" in format_report(r)
