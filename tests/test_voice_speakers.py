"""Per-speaker state of the voice model: posterior diversity, the one-mood rule and its history."""

from __future__ import annotations

import numpy as np
import pytest

from emolens.voice.speakers import (
    ONE_MOOD,
    MoodHistory,
    cold_share,
    one_mood_share,
    posterior_diversity,
    speaker_cold_weights,
)


def test_posterior_diversity_from_alike_to_spread() -> None:
    same = np.tile([0.7, 0.1, 0.1, 0.1], (10, 1))
    assert posterior_diversity(same) == pytest.approx(0.0, abs=1e-9)  # one mood, however confident
    assert posterior_diversity(same[:1]) == 0.0 and posterior_diversity(np.zeros((0, 4))) == 0.0
    certain_spread = np.eye(4)[np.arange(12) % 4]
    assert posterior_diversity(certain_spread) == pytest.approx(1.0, abs=1e-6)
    unsure_spread = 0.55 * np.full((12, 4), 0.25) + 0.45 * certain_spread
    assert 0.05 < posterior_diversity(unsure_spread) < 0.9
    assert posterior_diversity(np.tile(np.full(4, 0.25), (5, 1))) == 0.0  # nothing heard in any mood


def test_one_mood_share_is_one_below_the_low_threshold_and_zero_above_the_high_one() -> None:
    low, high = ONE_MOOD
    assert one_mood_share(0.0) == one_mood_share(low) == 1.0
    assert one_mood_share(high) == one_mood_share(1.0) == 0.0
    assert one_mood_share((low + high) / 2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="low < high"):
        one_mood_share(0.3, 0.4, 0.2)


def test_mood_history_accumulates_online_what_the_batch_function_computes() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(8, 0.4), size=30)
    h = MoodHistory()
    for a, b in ((0, 1), (1, 7), (7, 30)):
        h.add(p[a:b], "x")
        assert h.diversity("x") == pytest.approx(posterior_diversity(p[:b]), abs=1e-9)
    h.add(p[0], "y")  # a single posterior (1-D) for another speaker
    assert h.count("x") == 30 and h.count("y") == 1 and h.diversity("y") == 0.0
    assert h.count("nobody") == 0 and h.diversity("nobody") == 0.0


def test_speaker_cold_weights_keep_the_cold_start_model_for_a_person_heard_in_one_mood() -> None:
    rng = np.random.default_rng(1)
    one = np.tile([0.1, 0.1, 0.7, 0.1], (20, 1)) + rng.uniform(0, 0.02, (20, 4))
    many = np.eye(4)[np.arange(20) % 4] * 0.9 + 0.025
    probs = np.concatenate([one / one.sum(1, keepdims=True), many])
    speakers = np.array(["one"] * 20 + ["many"] * 20)
    w = speaker_cold_weights(probs, speakers, prior=8.0)
    assert np.all(w[:20] == 1.0)  # all alike: the cold-start model
    assert np.allclose(w[20:], cold_share(20, 8.0))  # spread: the usual share of a speaker heard 20 times
    assert np.allclose(speaker_cold_weights(probs, speakers, 8.0, one_mood=None), cold_share(20, 8.0))
