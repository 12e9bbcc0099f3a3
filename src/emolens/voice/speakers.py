"""Per-speaker state of the voice model: running feature statistics (:class:`SpeakerNormalizer`)
and the cold-start model's posteriors heard so far (:class:`MoodHistory`), with the two rules that
decide how much a speaker's segment leans on the cold-start model (:func:`cold_share`,
:func:`one_mood_share`)."""

from __future__ import annotations

import numpy as np

#: :func:`one_mood_share` thresholds on :func:`posterior_diversity`: the cold-start model alone up
#: to the first, the per-speaker model alone from the second, linear in between
ONE_MOOD = (0.2, 0.4)


class SpeakerNormalizer:
    """Per-speaker feature normalisation accumulated online (one state per tracked person).

    Each speaker's running mean and variance of the raw feature vectors are shrunk towards the
    global (training) statistics with ``prior`` pseudo-observations, so the first utterance of a
    new person is normalised almost globally and later ones more and more by that person's own
    statistics (which removes voice, microphone and room). :meth:`__call__` adds the utterance
    to its speaker's statistics first, then normalises it.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, prior: float = 8.0) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.var = np.asarray(std, dtype=np.float64) ** 2
        self.prior = float(prior)
        self._n: dict[object, int] = {}
        self._sum: dict[object, np.ndarray] = {}
        self._sq: dict[object, np.ndarray] = {}
        #: the cold-start model's posteriors per speaker (see :func:`one_mood_share`)
        self.moods = MoodHistory()

    def update(self, x: np.ndarray, speaker: object = None, offsets: np.ndarray | None = None) -> None:
        """Add raw feature vectors ``(D,)`` or ``(N, D)`` to ``speaker``'s statistics; with
        ``offsets`` (same shape: each vector's estimated emotion effect) ``x - offsets`` is added."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if offsets is not None:
            x = x - np.atleast_2d(np.asarray(offsets, dtype=np.float64))
        self._n[speaker] = self._n.get(speaker, 0) + len(x)
        self._sum[speaker] = self._sum.get(speaker, 0.0) + x.sum(0)
        self._sq[speaker] = self._sq.get(speaker, 0.0) + (x * x).sum(0)

    def revise(self, x: np.ndarray, speaker: object, old: np.ndarray, new: np.ndarray) -> None:
        """Replace the offsets ``old`` of vectors ``x`` already added to ``speaker``'s statistics
        with ``new`` (the count is unchanged)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        a, b = x - np.atleast_2d(old), x - np.atleast_2d(new)
        self._sum[speaker] = self._sum[speaker] + (b - a).sum(0)
        self._sq[speaker] = self._sq[speaker] + (b * b - a * a).sum(0)

    def stats(self, speaker: object = None) -> tuple[np.ndarray, np.ndarray]:
        """Shrunk ``(mean, std)`` of ``speaker`` (the global ones for an unknown speaker)."""
        return shrunk_stats(self._n.get(speaker, 0), self._sum.get(speaker, 0.0), self._sq.get(speaker, 0.0),
                            self.mean, self.var, self.prior)

    def count(self, speaker: object = None) -> int:
        """How many feature vectors ``speaker``'s statistics hold (0 for an unknown speaker)."""
        return self._n.get(speaker, 0)

    def normalize_alone(self, x: np.ndarray) -> np.ndarray:
        """``x`` normalised as a first utterance: with the statistics of ``x`` alone, shrunk
        towards the global ones (no state read or changed)."""
        x = np.asarray(x, dtype=np.float64)
        mean, std = shrunk_stats(1, x, x * x, self.mean, self.var, self.prior)
        return ((x - mean) / std).astype(np.float32)

    def normalize(self, x: np.ndarray, speaker: object = None) -> np.ndarray:
        """``(x - mean) / std`` with ``speaker``'s current statistics (no update)."""
        mean, std = self.stats(speaker)
        return ((np.asarray(x, dtype=np.float64) - mean) / std).astype(np.float32)

    def __call__(self, x: np.ndarray, speaker: object = None) -> np.ndarray:
        """Update ``speaker``'s statistics with ``x``, then normalise ``x`` with them."""
        self.update(x, speaker)
        return self.normalize(x, speaker)


def cold_share(n: int, prior: float) -> float:
    """Weight of the cold-start network for a segment whose speaker's statistics hold ``n``
    segments (itself included): 1 for the first, then ``prior / (prior + n - 1)``, the share of
    the statistics that is still the prior rather than the speaker's other segments."""
    return 1.0 if n <= 1 else prior / (prior + n - 1)


def shrunk_stats(n: int, total: np.ndarray | float, sq: np.ndarray | float, mean: np.ndarray, var: np.ndarray,
                 prior: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``n`` observations (sum ``total``, sum of squares ``sq``) shrunk towards
    ``mean``/``var`` with ``prior`` pseudo-observations."""
    w = n + prior
    m = (np.asarray(total, dtype=np.float64) + prior * mean) / w
    ex2 = (np.asarray(sq, dtype=np.float64) + prior * (var + mean * mean)) / w
    return m, np.sqrt(np.maximum(ex2 - m * m, 1e-8 * (var + 1e-12)) + 1e-12)


def entropy(p: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each probability vector along the last axis."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(-1)


def posterior_diversity(probs: np.ndarray) -> float:
    """How much a speaker's segments differ in emotion, from their posteriors ``(N, classes)``:
    the mutual information between segment and class, ``H(mean p) - mean H(p)``, over ``H(mean p)``.

    0 when every segment gets the same posterior (a single segment included), 1 when each is
    certain and they spread over the classes. Speakers of acted corpora, heard in every emotion,
    come out at about 0.3-0.5; a person heard in one mood only mostly below 0.3."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if len(probs) == 0:
        return 0.0
    return _diversity(probs.sum(0), float(entropy(probs).sum()), len(probs))


def _diversity(total: np.ndarray, entropies: float, n: int) -> float:
    h = float(entropy(total / n))
    return 0.0 if h <= 1e-9 else float(np.clip((h - entropies / n) / h, 0.0, 1.0))


def one_mood_share(diversity: float, low: float = ONE_MOOD[0], high: float = ONE_MOOD[1]) -> float:
    """Weight of the cold-start network for a speaker whose segments have
    :func:`posterior_diversity` ``diversity``: 1 up to ``low``, 0 from ``high``, linear between.

    Per-speaker statistics assume the speaker's segments span several emotions; for a person
    heard in one mood only they hold that mood, and normalising with them removes it. Such a
    speaker's segments all sound alike to the cold-start model (low diversity), so its
    segments are scored by the cold-start model, which never reads the speaker's statistics."""
    if high <= low:
        raise ValueError(f"one_mood_share needs low < high, got {low} and {high}")
    return float(np.clip((high - diversity) / (high - low), 0.0, 1.0))


class MoodHistory:
    """The cold-start model's posteriors of each speaker's segments so far, kept as their sum and
    the sum of their entropies (constant memory per speaker), for :func:`posterior_diversity`."""

    def __init__(self) -> None:
        self._n: dict[object, int] = {}
        self._sum: dict[object, np.ndarray] = {}
        self._ent: dict[object, float] = {}

    def add(self, probs: np.ndarray, speaker: object = None) -> None:
        """Add posteriors ``(classes,)`` or ``(N, classes)`` of ``speaker``'s segments."""
        probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
        self._n[speaker] = self._n.get(speaker, 0) + len(probs)
        self._sum[speaker] = self._sum.get(speaker, 0.0) + probs.sum(0)
        self._ent[speaker] = self._ent.get(speaker, 0.0) + float(entropy(probs).sum())

    def count(self, speaker: object = None) -> int:
        """How many posteriors ``speaker``'s history holds."""
        return self._n.get(speaker, 0)

    def diversity(self, speaker: object = None) -> float:
        """:func:`posterior_diversity` of ``speaker``'s posteriors so far (0 when none or one)."""
        n = self._n.get(speaker, 0)
        return 0.0 if n == 0 else _diversity(np.asarray(self._sum[speaker]), self._ent[speaker], n)


def speaker_cold_weights(cold_probs: np.ndarray, speakers: np.ndarray, prior: float,
                         one_mood: tuple[float, float] | None = ONE_MOOD) -> np.ndarray:
    """Cold-start weight ``(N,)`` of each row when all of its speaker's rows are known (the
    ``full`` statistics of the evaluation protocols): :func:`cold_share` of the speaker's row
    count, raised to :func:`one_mood_share` of the speaker's cold-start posteriors ``cold_probs``
    ``(N, classes)`` (untempered) unless ``one_mood`` is None."""
    speakers = np.asarray(speakers)
    out = np.zeros(len(speakers))
    for s in dict.fromkeys(speakers.tolist()):
        rows = speakers == s
        w = cold_share(int(rows.sum()), prior)
        if one_mood is not None:
            w = max(w, one_mood_share(posterior_diversity(cold_probs[rows]), *one_mood))
        out[rows] = w
    return out
