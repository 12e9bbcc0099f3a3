"""One emotion vocabulary for every model, dataset and output in emolens.

Every probability output in emolens is a ``dict`` keyed by the names below. Dataset label
sets are mapped onto them explicitly here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

#: The seven FER2013 classes, in FER2013's code order (0 angry ... 6 neutral).
FER7: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: FER+ adds ``contempt`` to the FER2013 classes.
FERPLUS8: tuple[str, ...] = FER7 + ("contempt",)
#: The eight RAVDESS speech emotions, in RAVDESS code order (01 neutral ... 08 surprised).
RAVDESS8: tuple[str, ...] = (
    "neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise",
)
#: Every name emolens knows.
ALL_LABELS: tuple[str, ...] = FER7 + ("contempt", "calm")

#: FER+ vote columns (as in ``fer2013new.csv``) -> emolens names. ``unknown``/``NF`` are dropped.
FERPLUS_COLUMNS: dict[str, str] = {
    "neutral": "neutral",
    "happiness": "happy",
    "surprise": "surprise",
    "sadness": "sad",
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "contempt": "contempt",
}

#: Folder / file-name spellings users commonly have -> emolens names.
ALIASES: dict[str, str] = {
    "anger": "angry", "angry": "angry", "ang": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust",
    "fear": "fear", "fearful": "fear", "fea": "fear", "afraid": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy", "hap": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise", "sur": "surprise",
    "neutral": "neutral", "neu": "neutral",
    "contempt": "contempt", "calm": "calm",
}

#: Label folding used when comparing or fusing face (FER7) and voice (RAVDESS8) outputs:
#: ``calm`` has no facial counterpart in FER2013 and is folded into ``neutral``;
#: ``contempt`` (FER+) is folded into ``disgust``.
FOLD_TO_FER7: dict[str, str] = {name: name for name in FER7} | {
    "calm": "neutral", "contempt": "disgust",
}


def normalize_label(name: str) -> str:
    """Return the emolens spelling of a label name (``"Happiness"`` -> ``"happy"``).

    Raises ``ValueError`` for names emolens does not know.
    """
    key = name.strip().lower()
    if key not in ALIASES:
        raise ValueError(f"unknown emotion label {name!r}; known: {', '.join(ALL_LABELS)}")
    return ALIASES[key]


def probs_dict(probs: Sequence[float] | np.ndarray, labels: Sequence[str] = FER7) -> dict[str, float]:
    """Turn a probability vector into the ``{label: probability}`` dict used in all outputs."""
    values = np.asarray(probs, dtype=np.float64).reshape(-1)
    if values.shape[0] != len(labels):
        raise ValueError(f"expected {len(labels)} probabilities, got {values.shape[0]}")
    return {name: round(float(p), 6) for name, p in zip(labels, values)}


def fold_probs(probs: Mapping[str, float], target: Sequence[str] = FER7) -> dict[str, float]:
    """Fold a probability dict onto ``target`` labels with :data:`FOLD_TO_FER7` (sums preserved)."""
    out = {name: 0.0 for name in target}
    for name, p in probs.items():
        folded = FOLD_TO_FER7.get(name, name)
        if folded in out:
            out[folded] += float(p)
    return out


def index_of(labels: Iterable[str]) -> dict[str, int]:
    """Map each name in ``labels`` to its position."""
    return {name: i for i, name in enumerate(labels)}
