"""The multi-corpus voice recipe: its knobs (:class:`MultiConfig`, saved in the model JSON), the
features it reads, and its cold-start partner."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from emolens.datasets import SpeechDataset


@dataclass
class MultiConfig:
    """Knobs of the functionals recipe (saved in the model JSON)."""

    hidden: int = 256
    dropout: float = 0.3
    epochs: int = 300
    lr: float = 3e-3
    weight_decay: float = 1e-3
    label_smoothing: float = 0.05
    copies: int = 2
    norm: str = "speaker"  # speaker | online | corpus | global
    prior: float = 0.0  # pseudo-observations of the global stats in the per-speaker norm (0: pure)
    seed: int = 0
    threads: int = 1
    encoder: bool = False  # add the speaker-encoder embeddings (emolens.voice.encoder) to the functionals
    seeds: int = 1  # networks trained with seeds seed, seed+1, ... and merged into one (logits averaged)
    adversary: float = 0.0  # weight of the gradient reversed from a corpus classifier on the hidden layer
    dims: float = 0.0  # weight of the arousal/valence loss on the expected circumplex position (AROUSAL_VALENCE)
    states: bool = False  # add the encoder's frame-level states (SpeechEncoder.states); needs encoder
    mood: float = 0.0  # share of the estimated emotion effect taken out of each speaker's statistics (0: off)

    def __post_init__(self) -> None:
        if self.states and not self.encoder:
            raise ValueError("the encoder states come with the encoder: states needs encoder")
        if self.mood and self.norm not in ("online", "speaker"):
            raise ValueError("mood-aware statistics are per-speaker statistics: mood needs norm online or speaker")

    @property
    def kinds(self) -> tuple[str, ...]:
        """Feature kinds (:data:`emolens.train.speech_features.KINDS`) this recipe reads."""
        return ("functionals",) + (("encoder",) if self.encoder else ()) + (("states",) if self.states else ())


def cold_config(cfg: MultiConfig) -> MultiConfig:
    """The cold-start partner's recipe for ``cfg``: every file as its speaker's first utterance,
    one network, no states, adversary or mood (its posteriors start the mood-aware statistics)."""
    return replace(cfg, norm="first", states=False, seeds=1, adversary=0.0, dims=0.0, mood=0.0)


def cold_columns(cfg: MultiConfig, d: int) -> np.ndarray:
    """Columns of the recipe's ``d`` features the cold-start partner reads (all but the states)."""
    from emolens.voice.encoder import state_feature_names

    n = d - (len(state_feature_names()) if cfg.states else 0)
    if n <= 0:
        raise ValueError("the cold-start partner needs features besides the encoder states")
    return np.arange(n)


def select_columns(names: list[str], drop: str) -> np.ndarray:
    """Indices of the functionals kept when dropping the name prefixes in ``drop`` (``|``-separated)."""
    prefixes = [p for p in drop.split("|") if p]
    return np.asarray([i for i, n in enumerate(names) if not any(n.startswith(p) for p in prefixes)], dtype=np.int64)


def feature_names(cfg: MultiConfig) -> list[str]:
    """Names of the features the recipe reads: the functionals, then the encoder's values."""
    from emolens.voice.encoder import encoder_feature_names, state_feature_names
    from emolens.voice.features import functional_names

    return (functional_names() + (encoder_feature_names() if cfg.encoder else [])
            + (state_feature_names() if cfg.states else []))


def load_features(data_root: str | Path, cfg: MultiConfig, drop: str = "",
                  cache: str | Path | None = None) -> tuple[SpeechDataset, np.ndarray, np.ndarray]:
    """All corpora under ``data_root``, their (cached) functionals ``(copies+1, N, D)`` and the
    kept column indices."""
    from emolens.datasets import load_speech_corpora
    from emolens.train.speech_features import DEFAULT_CACHE, dataset_features
    data = load_speech_corpora(data_root)
    feats = dataset_features(data, cfg.copies, cache or DEFAULT_CACHE, kinds=cfg.kinds)
    cols = select_columns(feature_names(cfg), drop)
    return data, feats[..., cols], cols
