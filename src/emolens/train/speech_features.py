"""Feature caches for multi-corpus speech training: :func:`emolens.voice.functionals` of every
file, and optionally the speaker-encoder embeddings (:mod:`emolens.voice.encoder`), clean and
with ``copies`` random augmentations (:func:`emolens.voice.augment_audio`).

Each (corpus, copy, kind) is cached once under ``runs/speech_features/`` (or ``--cache``), keyed
by the file list and :data:`~emolens.voice.features.FUNCTIONALS_VERSION`; kinds missing from the
cache are computed in one decoding pass, so no file is decoded twice across runs.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from emolens.datasets import SpeechDataset
from emolens.media import AUDIO_RATE, load_audio
from emolens.voice.features import FUNCTIONALS_VERSION, augment_audio, functionals

DEFAULT_CACHE = Path("runs") / "speech_features"


def _key(paths: list[str], copy: int) -> str:
    h = hashlib.sha1(f"v{FUNCTIONALS_VERSION}:copy{copy}\n".encode())
    for p in paths:
        h.update(f"{Path(p).name}:{Path(p).stat().st_size}\n".encode())
    return h.hexdigest()[:12]


#: Feature kinds: name -> cache-file tag (``functionals`` keeps its original untagged files).
KINDS = {"functionals": "", "encoder": "-ge2e", "states": "-ge2e-states"}


def _extractors(kinds: list[str]) -> dict:
    from emolens.voice.encoder import speech_encoder

    return {k: {"functionals": functionals, "encoder": lambda a: speech_encoder().embed(a),
                "states": lambda a: speech_encoder().states(a)}[k] for k in kinds}


def corpus_features(data: SpeechDataset, corpus: str, copy: int = 0, cache: str | Path = DEFAULT_CACHE,
                    verbose: bool = True, kinds: tuple[str, ...] = ("functionals",)) -> np.ndarray:
    """Features ``float32 (n_corpus_items, D)`` of ``corpus``'s items, in dataset order: the
    ``kinds`` (:data:`KINDS`) side by side.

    ``copy`` 0 is the clean audio; copy ``c > 0`` applies :func:`augment_audio` with seed
    ``(c, item index)`` (deterministic, the same audio for every kind)."""
    idx = np.flatnonzero(data.corpora == corpus)
    paths = [data.items[i].path for i in idx]
    key = _key(paths, copy)
    files = {k: Path(cache) / f"{corpus}-c{copy}{KINDS[k]}-{key}.npy" for k in kinds}
    missing = [k for k in kinds if not files[k].is_file()]
    if missing:
        Path(cache).mkdir(parents=True, exist_ok=True)
        extract = _extractors(missing)
        out: dict[str, list[np.ndarray]] = {k: [] for k in missing}
        t0 = time.time()
        for j, p in enumerate(paths):
            audio = load_audio(p, AUDIO_RATE)
            if copy:
                audio = augment_audio(audio, np.random.default_rng([copy, j]))
            for k in missing:
                out[k].append(extract[k](audio))
            if verbose and (j + 1) % 500 == 0:
                print(f"[{corpus} copy {copy} {'+'.join(missing)}] {j + 1}/{len(paths)} ({time.time() - t0:.0f}s)",
                      flush=True)
        for k in missing:
            tmp = files[k].with_suffix(".tmp.npy")
            np.save(tmp, np.stack(out[k]).astype(np.float32))
            tmp.replace(files[k])
    return np.concatenate([np.load(files[k]) for k in kinds], axis=1)


def dataset_features(data: SpeechDataset, copies: int = 0, cache: str | Path = DEFAULT_CACHE,
                     verbose: bool = True, kinds: tuple[str, ...] = ("functionals",)) -> np.ndarray:
    """``float32 (1 + copies, N, D)``: clean and augmented features (``kinds``) of every item."""
    corpora = data.corpora
    out = None
    for c in range(copies + 1):
        for corpus in dict.fromkeys(corpora.tolist()):
            f = corpus_features(data, corpus, c, cache, verbose, kinds)
            if out is None:
                out = np.zeros((copies + 1, len(data), f.shape[1]), dtype=np.float32)
            out[c, corpora == corpus] = f
    assert out is not None
    return out


if __name__ == "__main__":  # python -m emolens.train.speech_features ../shared/data COPIES
    import sys

    from emolens.datasets import load_speech_corpora

    d = load_speech_corpora(sys.argv[1])
    print({c: int((d.corpora == c).sum()) for c in dict.fromkeys(d.corpora.tolist())}, flush=True)
    dataset_features(d, int(sys.argv[2]) if len(sys.argv) > 2 else 0, kinds=tuple(sys.argv[3:]) or ("functionals",))
