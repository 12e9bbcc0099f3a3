"""Multi-corpus speech: corpus readers, functionals, masked training, LOCO splits, per-speaker
normalisation and the shipped functionals model (real data in ../shared, skipped without it)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from emolens.datasets import SPEECH_CORPORA, load_emodb, load_speech_corpora, load_turev, load_urdu
from emolens.labels import RAVDESS8
from emolens.media import load_audio
from emolens.voice import DEFAULT_SPEECH_MODEL, SpeakerNormalizer, SpeechEmotionModel, functional_names, functionals

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def need(path: Path) -> Path:
    """``path``, or skip the test when ../shared is absent."""
    if not path.exists():
        pytest.skip(f"needs {path} (the ../shared data folder next to the repo)")
    return path


@pytest.fixture(scope="module")
def corpora():
    need(DATA / "emodb_speech")
    return load_speech_corpora(DATA)


def names(data) -> Counter:
    return Counter(RAVDESS8[k] for k in data.labels)


# ----------------------------------------------------------------------------- readers


def test_emodb_reader_counts() -> None:
    d = load_emodb(need(DATA / "emodb_speech"))
    assert len(d) == 535 - 81  # boredom dropped, never mapped onto another class
    assert names(d) == {"angry": 127, "disgust": 46, "fear": 69, "happy": 71, "sad": 62, "neutral": 79}
    per = Counter(d.speakers.tolist())
    assert len(per) == 10 and per["03"] == 49 - 5 and per["16"] == 71 - 14
    assert d.corpus_classes["emodb"] == SPEECH_CORPORA["emodb"]
    from emolens.voice import load_speech_data

    assert load_speech_data(DATA / "emodb_speech").paths == d.paths  # its manifest is read the same way


def test_urdu_reader_counts() -> None:
    d = load_urdu(need(DATA / "urdu_speech"))
    assert len(d) == 400 and set(names(d).values()) == {100}
    per = Counter(d.speakers.tolist())
    assert len(per) == 29 and per["SM4"] == 48 and per["SM5"] == 80


def test_turev_reader_counts() -> None:
    d = load_turev(need(DATA / "turev_speech"))
    assert len(d) == 1735
    assert names(d) == {"angry": 487, "calm": 408, "happy": 357, "sad": 483}
    per = Counter(d.speakers.tolist())
    assert per == {"1157": 150, "1234": 328, "1358": 328, "1984": 328, "6783": 328, "7895": 273}


def test_combined_corpora_keep_speakers_and_label_subsets_apart(corpora) -> None:
    assert Counter(corpora.corpora.tolist()) == {"ravdess": 1440, "emodb": 454, "urdu": 400, "turev": 1735}
    speakers = {c: {s for s, k in zip(corpora.speakers, corpora.corpora) if k == c} for c in SPEECH_CORPORA}
    for a in speakers:
        for b in speakers:
            assert a == b or speakers[a].isdisjoint(speakers[b])
    mask = corpora.class_mask()
    assert mask[np.arange(len(corpora)), corpora.labels].all()  # every label is inside its corpus's mask
    turev = corpora.corpora == "turev"
    assert not mask[turev][:, RAVDESS8.index("neutral")].any() and mask[turev][:, RAVDESS8.index("calm")].all()


# ----------------------------------------------------------------------------- splits and training


def test_loco_splits_never_leak_a_corpus(corpora) -> None:
    pytest.importorskip("torch")
    from emolens.train.speech_multi import loco_split

    for corpus in SPEECH_CORPORA:
        train, test, classes = loco_split(corpora, corpus)
        assert corpus not in set(corpora.corpora[train].tolist())
        assert set(corpora.corpora[test].tolist()) == {corpus}
        assert np.intersect1d(train, test).size == 0
        assert np.intersect1d(corpora.speakers[train], corpora.speakers[test]).size == 0
        assert {RAVDESS8[k] for k in corpora.labels[test]} == set(classes)
    assert "surprise" not in loco_split(corpora, "ravdess")[2]  # no other corpus labels surprise


def test_masked_training_on_a_tiny_subset(corpora) -> None:
    torch = pytest.importorskip("torch")
    from emolens.train.speech_mlp import balanced_weights, fit, masked_log_softmax
    from emolens.train.speech_recipe import MultiConfig

    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(corpora.corpora == c), 12, replace=False) for c in SPEECH_CORPORA])
    sub = corpora.subset(idx)
    x = np.stack([functionals(load_audio(p)) for p in sub.paths])
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    mask = sub.class_mask()
    net = fit(x, sub.labels, mask, balanced_weights(sub.labels, sub.corpora), MultiConfig(epochs=150, hidden=32))
    logits = net(torch.from_numpy(x.astype(np.float32)))
    logp = masked_log_softmax(logits, torch.from_numpy(mask))
    assert torch.isinf(logp[~torch.from_numpy(mask)]).all()  # classes a corpus lacks are never scored
    assert float((logp.argmax(1).numpy() == sub.labels).mean()) > 0.8  # it can fit its training data
    # the loss of a TurEV item gives no gradient to classes TurEV does not label
    i = int(np.flatnonzero(sub.corpora == "turev")[0])
    z = logits[i: i + 1].detach().clone().requires_grad_(True)
    loss = -masked_log_softmax(z, torch.from_numpy(mask[i: i + 1]))[0, sub.labels[i]]
    loss.backward()
    assert torch.all(z.grad[0, ~torch.from_numpy(mask[i])] == 0)


def _synthetic_corpora(seed: int, speaker_offset: float, one_mood: str = "", shift: float = 1.5):  # noqa: ANN202
    """Three corpora of 6 speakers x 16 files, 4 classes; each speaker shifts every feature by a
    random offset (standard deviation ``speaker_offset``), each class one feature by ``shift``; in
    corpus ``one_mood`` every speaker says all 16 files in one emotion. Returns the dataset and
    ``(2, N, 12)`` features: the clean copy and one "augmented" copy."""
    from emolens.datasets import SpeechDataset, SpeechItem

    rng = np.random.default_rng(seed)
    classes = ("neutral", "happy", "sad", "angry")
    items, rows = [], []
    for corpus in ("a", "b", "c"):
        for spk in range(6):
            offset = rng.normal(0, speaker_offset, 12)
            for k in range(16):
                c = spk % 4 if corpus == one_mood else k % 4
                items.append(SpeechItem(f"{corpus}/{spk}/{k}.wav", RAVDESS8.index(classes[c]), f"{corpus}/{spk}",
                                        corpus=corpus))
                rows.append(offset + shift * np.eye(12)[c] + rng.normal(0, 0.5, 12))
    return SpeechDataset(items, RAVDESS8, {c: classes for c in "abc"}), np.stack([np.asarray(rows)] * 2)


def test_loco_scores_each_test_file_with_full_and_first_utterance_statistics(tmp_path: Path) -> None:
    """Synthetic corpora whose speakers differ by a large offset: LOCO with each speaker's full
    statistics removes it, scored as a first utterance it does not; both logits are saved."""
    pytest.importorskip("torch")
    from emolens.train.speech_multi import protocol_corpora
    from emolens.train.speech_recipe import MultiConfig
    from emolens.train.speech_report import save_logits, table

    data, feats = _synthetic_corpora(0, 3.0)
    res = protocol_corpora(data, feats, MultiConfig(epochs=120, hidden=16, copies=1, norm="online", prior=2.0),
                           log=False)
    for r in res["corpora"].values():
        assert r["uar"] > 0.8 and r["first_utterance_uar"] < r["uar"] - 0.2, r
    assert "UAR, first utterance" in table(res)
    save_logits(tmp_path / "corpora_logits.npz", res, data)
    with np.load(tmp_path / "corpora_logits.npz") as z:
        assert z["logits_first"].shape == z["logits"].shape and list(z["speakers"]) == list(data.speakers)


def test_mood_aware_statistics_keep_the_mood_of_a_person_heard_in_one_mood() -> None:
    """Corpus c's speakers each speak in one emotion only: plain per-speaker statistics take the
    emotion out with the voice (near chance), mood-aware ones (cold-start posterior, then the
    model's own) keep it."""
    pytest.importorskip("torch")
    from dataclasses import replace

    from emolens.train.speech_multi import protocol_corpora
    from emolens.train.speech_norm import class_effects
    from emolens.train.speech_recipe import MultiConfig

    data, feats = _synthetic_corpora(2, 0.5, one_mood="c", shift=3.0)
    effects = class_effects(feats[0], data, np.flatnonzero(data.corpora != "c"))
    classes = [RAVDESS8.index(c) for c in ("neutral", "happy", "sad", "angry")]
    truth = 3.0 * np.eye(12)[:4] - 3.0 / 4 * np.eye(12)[:4].sum(0)  # each class's shift from a speaker's centre
    assert np.abs(effects[classes] - truth).max() < 0.2
    assert not np.delete(effects, classes, axis=0).any()  # classes no training corpus labels: no effect
    plain = MultiConfig(epochs=120, hidden=16, copies=1, norm="online", prior=2.0)
    before = protocol_corpora(data, feats, plain, corpora=["c"], log=False)["corpora"]["c"]
    after = protocol_corpora(data, feats, replace(plain, mood=1.0), corpora=["c"], log=False)["corpora"]["c"]
    assert before["uar"] < 0.5 and after["uar"] > before["uar"] + 0.15, (before["uar"], after["uar"])
    with pytest.raises(ValueError, match="mood needs"):
        replace(plain, norm="global", mood=1.0)


def test_loco_with_the_cold_start_partner_keeps_one_mood_speakers_and_the_others() -> None:
    """Corpus c's speakers each speak in one emotion only: per-speaker statistics take it out, the
    pipeline's mix (cold-start partner for speakers whose files all sound alike) keeps it; corpus
    a's speakers speak in every emotion and keep the per-speaker model's score."""
    pytest.importorskip("torch")
    from emolens.train.speech_multi import protocol_corpora
    from emolens.train.speech_recipe import MultiConfig
    from emolens.train.speech_report import table

    data, feats = _synthetic_corpora(2, 0.5, one_mood="c", shift=3.0)
    # trained to confident posteriors, as the real partner's are (an unsure one makes every speaker look alike)
    cfg = MultiConfig(epochs=200, hidden=32, lr=0.01, copies=1, norm="online", prior=2.0)
    res = protocol_corpora(data, feats, cfg, corpora=["a", "c"], log=False, cold_start=True)
    a, c = res["corpora"]["a"], res["corpora"]["c"]
    assert c["uar"] < 0.5 and c["pipeline"]["uar"] > c["uar"] + 0.25, (c["uar"], c["pipeline"]["uar"])
    assert a["uar"] > 0.8 and a["pipeline"]["uar"] >= a["uar"] - 0.05, (a["uar"], a["pipeline"]["uar"])
    assert "with the cold-start partner" in table(res)
    assert "pipeline" not in protocol_corpora(data, feats, cfg, corpora=["c"], log=False)["corpora"]["c"]


def test_speaker_cv_with_the_cold_start_partner() -> None:
    """The speakers protocol scores the pair too: corpus c's one-mood speakers gain, corpus a's
    speakers (every emotion) keep the per-speaker model's score."""
    pytest.importorskip("torch")
    from emolens.train.speech_multi import protocol_speakers
    from emolens.train.speech_recipe import MultiConfig

    data, feats = _synthetic_corpora(2, 0.5, one_mood="c", shift=3.0)
    cfg = MultiConfig(epochs=200, hidden=32, lr=0.01, copies=1, norm="online", prior=2.0)
    res = protocol_speakers(data, feats, cfg, corpora=["a", "c"], log=False, cold_start=True)
    a, c = res["corpora"]["a"], res["corpora"]["c"]
    assert c["pipeline"]["uar"] > c["uar"] + 0.25, (c["uar"], c["pipeline"]["uar"])
    assert a["uar"] > 0.8 and a["pipeline"]["uar"] >= a["uar"] - 0.05, (a["uar"], a["pipeline"]["uar"])
    assert res["logits_cold"].shape == res["logits"].shape and len(res["pipeline_temperatures"]) == 2


def test_speaker_statistics_revise_an_offset() -> None:
    rng = np.random.default_rng(0)
    x, old, new = rng.normal(size=(3, 5, 4))
    a, b = SpeakerNormalizer(np.zeros(4), np.ones(4), 2.0), SpeakerNormalizer(np.zeros(4), np.ones(4), 2.0)
    a.update(x, "s", old)
    a.revise(x, "s", old, new)
    b.update(x - new, "s")
    assert a.count("s") == 5 and np.allclose(a.stats("s"), b.stats("s"))


def test_cold_start_training_normalises_every_file_as_a_first_utterance() -> None:
    pytest.importorskip("torch")
    from emolens.train.speech_multi import protocol_corpora
    from emolens.train.speech_norm import global_stats, normalized
    from emolens.train.speech_recipe import MultiConfig
    from emolens.voice.speakers import shrunk_stats

    data, feats = _synthetic_corpora(1, 1.0)
    cold = MultiConfig(epochs=120, hidden=16, copies=1, norm="first", prior=2.0)
    mean, var = global_stats(feats, np.arange(len(data)))
    z = normalized(feats, data, cold, mean, var)
    x = feats[1, 5].astype(np.float64)  # any file of any copy: the statistics of that file alone
    m, sd = shrunk_stats(1, x, x * x, mean, var, 2.0)
    assert np.allclose(z[1, 5], (x - m) / sd, atol=1e-5)
    res = protocol_corpora(data, feats, cold, log=False)
    for r in res["corpora"].values():  # its test files are first utterances whichever way they are scored
        assert r["uar"] == r["first_utterance_uar"] and r["uar"] > 0.45, r


def test_seed_ensemble_merges_into_one_mlp_with_averaged_logits(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from emolens.train.speech_mlp import MLP, export_onnx, logits_of, merge

    torch.manual_seed(0)
    nets = [MLP(20, 8, 16, 0.3).eval() for _ in range(3)]
    merged = merge(nets)
    x = np.random.default_rng(0).normal(size=(5, 20)).astype(np.float32)
    mean = np.mean([logits_of(n, x) for n in nets], axis=0)
    assert np.allclose(logits_of(merged, x), mean, atol=1e-5)
    assert not np.allclose(logits_of(nets[0], x), mean, atol=1e-3)  # the members differ
    export_onnx(merged, tmp_path / "m.onnx", temperature=2.0)  # the merged net exports like any MLP
    probs = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"features": x})[0]
    want = np.exp(mean / 2.0) / np.exp(mean / 2.0).sum(1, keepdims=True)
    assert np.allclose(probs, want, atol=1e-5)


def test_corpus_adversary_hides_the_corpus_from_the_hidden_layer() -> None:
    """Synthetic data: one input carries the emotion, one the corpus. With the adversary on, a
    linear probe on the hidden layer tells the corpora apart less well; the emotion stays."""
    torch = pytest.importorskip("torch")
    from emolens.train.speech_mlp import fit
    from emolens.train.speech_recipe import MultiConfig

    rng = np.random.default_rng(0)
    n = 1200
    y, corpus = rng.integers(0, 2, n), rng.integers(0, 2, n)
    x = rng.normal(size=(n, 8))
    x[:, 0] += 2.0 * y
    x[:, 1] += 4.0 * corpus
    mask = np.ones((n, 2), dtype=bool)
    w = np.ones(n)

    def probe(adversary: float) -> tuple[float, float]:
        cfg = MultiConfig(hidden=16, dropout=0.0, epochs=400, adversary=adversary)
        net = fit(x, y, mask, w, cfg, corpus)
        with torch.no_grad():
            h = net.net[:4](torch.from_numpy(x.astype(np.float32))).numpy()
            emotion = float((net(torch.from_numpy(x.astype(np.float32))).numpy().argmax(1) == y).mean())
        feats = np.c_[h, np.ones(n)]  # least-squares one-vs-rest probe for the corpus
        coef = np.linalg.lstsq(feats, np.eye(2)[corpus], rcond=None)[0]
        return float(((feats @ coef).argmax(1) == corpus).mean()), emotion

    plain, adversarial = probe(0.0), probe(3.0)
    assert plain[0] > 0.9, plain  # the corpus is plain to see without the adversary
    assert adversarial[0] < plain[0] - 0.1, (plain, adversarial)
    assert adversarial[1] > 0.78 and plain[1] > 0.78, (plain, adversarial)  # Bayes rate 0.84


def test_arousal_valence_loss_is_part_of_the_objective() -> None:
    """``dims`` adds the circumplex loss (the same seed trains a different network) and needs the
    class names to place the classes."""
    torch = pytest.importorskip("torch")
    from emolens.train.speech_mlp import AROUSAL_VALENCE, fit
    from emolens.train.speech_recipe import MultiConfig

    names = ("calm", "sad", "angry", "happy")
    assert all(c in AROUSAL_VALENCE for c in names)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    x = rng.normal(size=(400, 6)) + 0.8 * np.eye(4, 6)[y]
    mask, w = np.ones((400, 4), dtype=bool), np.ones(400)

    def logits(dims: float) -> np.ndarray:
        net = fit(x, y, mask, w, MultiConfig(hidden=16, epochs=50, dims=dims), None, names)
        with torch.no_grad():
            return net(torch.from_numpy(x.astype(np.float32))).numpy()

    assert np.allclose(logits(0.0), logits(0.0)) and not np.allclose(logits(0.0), logits(1.0), atol=1e-3)
    with pytest.raises(ValueError, match="class names"):
        fit(x, y, mask, w, MultiConfig(hidden=16, epochs=2, dims=1.0))


def test_balanced_weights_give_every_corpus_the_same_total(corpora) -> None:
    pytest.importorskip("torch")
    from emolens.train.speech_mlp import balanced_weights

    w = balanced_weights(corpora.labels, corpora.corpora)
    totals = [w[corpora.corpora == c].sum() for c in SPEECH_CORPORA]
    assert np.allclose(totals, totals[0])


# ----------------------------------------------------------------------------- features and normalisation


def test_functionals_pitch_and_shape() -> None:
    sr = 16000
    t = np.arange(sr) / sr
    low, high = functionals(0.3 * np.sin(2 * np.pi * 120 * t)), functionals(0.3 * np.sin(2 * np.pi * 240 * t))
    n = functional_names()
    assert low.shape == (len(n),) and np.isfinite(low).all()
    f0 = n.index("f0st_p50")
    assert high[f0] - low[f0] == pytest.approx(12.0, abs=0.5)  # one octave = 12 semitones
    assert low[n.index("voiced_ratio")] > 0.9


def test_speaker_normalizer_accumulates_online() -> None:
    rng = np.random.default_rng(0)
    norm = SpeakerNormalizer(np.zeros(3), np.ones(3), prior=4.0)
    first = norm(np.array([5.0, 5.0, 5.0]), "a")
    assert np.all(first > 0) and np.all(first < 5)  # one utterance: mostly the global statistics
    for _ in range(200):
        norm.update(rng.normal(5.0, 2.0, 3), "a")
    z = norm.normalize(np.array([5.0, 5.0, 5.0]), "a")
    assert np.all(np.abs(z) < 0.3)  # many utterances: the speaker's own mean
    assert np.allclose(norm.normalize(np.ones(3), "b"), 1.0)  # an unknown speaker: global


# ----------------------------------------------------------------------------- the shipped model


def test_shipped_functionals_model_card() -> None:
    meta = json.loads(DEFAULT_SPEECH_MODEL.with_suffix(".json").read_text())
    assert meta["model"] == "functionals" and meta["labels"] == list(RAVDESS8)
    assert len(meta["normalization"]["columns"]) == len(meta["normalization"]["mean"])
    assert set(meta["evaluation"]) >= {"corpora", "speakers"}
    assert meta["temperature"] > 0
    card = DEFAULT_SPEECH_MODEL.with_suffix(".md").read_text()
    assert "leave-one-corpus-out" in card.lower() and "speaker-independent" in card.lower()


def test_shipped_model_per_speaker_state(ravdess: Path) -> None:
    model = SpeechEmotionModel()
    audio = load_audio(ravdess / "Actor_23" / "03-01-05-02-01-01-23.ogg")
    p_global = model.predict_audio(audio)  # no speaker: global statistics, nothing accumulated
    assert p_global.shape == (8,) and p_global.sum() == pytest.approx(1, abs=1e-4)
    assert np.allclose(model.predict_audio(audio), p_global)
    p1 = model.predict_audio(audio, speaker="x")
    before = model.normalizer.stats("x")[0]
    p2 = model.predict_audio(audio, speaker="x")  # the same person again: statistics moved
    assert model.normalizer.count("x") == 2 and not np.allclose(model.normalizer.stats("x")[0], before)
    assert np.allclose(p1, p2, atol=1e-6)  # but the same segment twice is one mood: still the cold start
    assert model.normalizer.count("y") == 0 and model.normalizer.moods.count("x") == 2


def test_a_cold_start_model_reading_other_features_is_refused(tmp_path: Path) -> None:
    import shutil
    models = DEFAULT_SPEECH_MODEL.parent
    for name in ("speech_emotion.onnx", "speech_emotion.json", "speech_emotion_cold.onnx", "speech_encoder.onnx"):
        shutil.copy(models / name, tmp_path / name)
    cold = json.loads((models / "speech_emotion_cold.json").read_text())
    (tmp_path / "speech_emotion_cold.json").write_text(json.dumps(cold))
    SpeechEmotionModel(tmp_path / "speech_emotion.onnx")  # the shipped pair loads
    cold["normalization"]["columns"] = cold["normalization"]["columns"][:-1] + [10**6]  # one it cannot have
    (tmp_path / "speech_emotion_cold.json").write_text(json.dumps(cold))
    with pytest.raises(ValueError, match="subset of the same features"):
        SpeechEmotionModel(tmp_path / "speech_emotion.onnx")


def _mood_model(tmp_path: Path, effects: np.ndarray | None, cold: bool = True) -> SpeechEmotionModel:
    """The shipped model copied to ``tmp_path`` with ``effects`` as its mood effects (share 1)."""
    import shutil
    models = DEFAULT_SPEECH_MODEL.parent
    for name in ("speech_emotion.onnx", "speech_emotion_cold.onnx", "speech_emotion_cold.json",
                 "speech_encoder.onnx"):
        shutil.copy(models / name, tmp_path / name)
    meta = json.loads((models / "speech_emotion.json").read_text())
    meta["normalization"].pop("mood", None)
    if effects is not None:
        meta["normalization"]["mood"] = {"share": 1.0, "effects": effects.tolist()}
    if not cold:
        meta.pop("cold_start", None)
    (tmp_path / "speech_emotion.json").write_text(json.dumps(meta))
    return SpeechEmotionModel(tmp_path / "speech_emotion.onnx")


def test_mood_aware_statistics_at_inference(tmp_path: Path, ravdess: Path) -> None:
    """``observe`` takes each segment's estimated emotion effect out of its speaker's statistics:
    first weighted by the cold-start model's posterior, then by the model's own; no effects: a
    plain update."""
    model = _mood_model(tmp_path, None)
    k, d = len(model.labels), len(model.columns)
    x = np.stack([model.raw_features(load_audio(ravdess / "Actor_23" / f"03-01-0{e}-01-01-01-23.ogg"))
                  for e in (1, 5)])
    plain = SpeakerNormalizer(model.normalizer.mean, np.sqrt(model.normalizer.var), model.normalizer.prior)
    model.observe(x, plain, "s")
    ref = SpeakerNormalizer(plain.mean, np.sqrt(plain.var), plain.prior)
    ref.update(x, "s")
    assert np.allclose(plain.stats("s"), ref.stats("s"))
    effects = np.random.default_rng(0).normal(0, 0.3, (k, d)) * np.sqrt(plain.var)
    mood = _mood_model(tmp_path, effects)
    norm = SpeakerNormalizer(plain.mean, np.sqrt(plain.var), plain.prior)
    mood.observe(x, norm, "s")
    def untempered(model: SpeechEmotionModel, p: np.ndarray) -> np.ndarray:  # softmax of the raw logits
        q = p.astype(np.float64) ** model.meta["temperature"]
        return q / q.sum(1, keepdims=True)

    cold = untempered(mood.cold, mood.cold.predict_windows(np.stack([mood.cold.normalizer.normalize_alone(r)
                                                                     for r in mood.cold_features(x)]))) @ effects
    assert mood.cold.meta["temperature"] > 1.5  # the shipped files are scaled: undoing it matters
    ref = SpeakerNormalizer(plain.mean, np.sqrt(plain.var), plain.prior)
    ref.update(x, "s", cold)
    own = untempered(mood, mood.predict_windows(np.stack([ref.normalize(r, "s") for r in x]))) @ effects
    expected = SpeakerNormalizer(plain.mean, np.sqrt(plain.var), plain.prior)
    expected.update(x - own, "s")
    assert norm.count("s") == 2 and np.allclose(norm.stats("s"), expected.stats("s"))
    assert not np.allclose(norm.stats("s")[0], plain.stats("s")[0])
    with pytest.raises(ValueError, match="cold-start"):
        _mood_model(tmp_path, effects, cold=False)
    with pytest.raises(ValueError, match="mood effects of shape"):
        _mood_model(tmp_path, effects[:, :-1])


def test_a_new_voice_is_scored_by_the_cold_start_model_then_by_the_main_one_more_and_more(ravdess: Path) -> None:
    """The first segment of a voice (or of no one): the cold-start model. Later ones: both, the
    cold-start model by ``max(cold_share, one_mood_share)``, so a voice heard in many moods is
    scored more and more by the main model, one that always sounds alike stays with the cold start."""
    from emolens.voice.speakers import cold_share, one_mood_share, posterior_diversity

    model = SpeechEmotionModel()
    assert model.one_mood == (0.2, 0.4)
    assert model.cold is not None and model.cold.meta["normalization"]["mode"] == "first"
    x = model.raw_features(load_audio(ravdess / "Actor_23" / "03-01-05-02-01-01-23.ogg"))
    cold = model.cold.predict_windows(model.cold.normalizer.normalize_alone(model.cold_features(x))[None])[0]
    first = model.predict_features(x, speaker="cold-start test")[0]
    assert np.allclose(first, cold, atol=1e-6)  # one segment heard: the cold-start model
    assert np.allclose(model.predict_features(x)[0], cold, atol=1e-6)  # no speaker: a new voice too
    prior = model.normalizer.prior
    for _ in range(31):  # the same segment again and again: one mood, so the cold-start model stays
        again = model.predict_features(x, speaker="cold-start test")[0]
    norm = model.normalizer
    assert norm.count("cold-start test") == 32 and norm.moods.diversity("cold-start test") < 0.01
    assert model.cold_weight(model.normalizer, "cold-start test") == 1.0 and np.allclose(again, cold, atol=1e-6)
    files = sorted((ravdess / "Actor_23").glob("03-01-*-23.ogg"))[::2]  # 30 files, every emotion
    raw = np.stack([model.raw_features(load_audio(f)) for f in files])
    posts = []
    for i, r in enumerate(raw):  # a voice heard in many moods: the main model decides more and more
        p = model.predict_features(r, speaker="many moods")[0]
        c = model.cold.predict_windows(model.cold.normalizer.normalize_alone(model.cold_features(r))[None])
        posts.append(model.cold.untempered(c)[0])
        warm = model.predict_windows(model.normalizer.normalize(r, "many moods")[None])[0]
        w = max(cold_share(i + 1, prior), one_mood_share(posterior_diversity(np.array(posts)), *model.one_mood))
        assert model.cold_weight(model.normalizer, "many moods") == pytest.approx(w)
        assert np.allclose(p, w * c[0] + (1 - w) * warm, atol=1e-5) and p.sum() == pytest.approx(1, abs=1e-5)
    assert i == 29 and 0 < w < 0.25 and posterior_diversity(np.array(posts)) > model.one_mood[1]
    model.one_mood = None  # a model without the rule: the share of the prior in the statistics alone
    assert model.cold_weight(model.normalizer, "cold-start test") == pytest.approx(cold_share(32, prior))
    norm = SpeakerNormalizer(model.normalizer.mean, np.sqrt(model.normalizer.var), model.normalizer.prior)
    norm.update(x, "a")  # one segment: the speaker's statistics are those of the segment alone
    assert norm.count("a") == 1 and norm.count("b") == 0
    assert np.allclose(norm.normalize(x, "a"), norm.normalize_alone(x), atol=1e-5)


def test_video_voice_is_rescored_per_tracked_person(ravdess: Path) -> None:
    from emolens.fusion import AVFuser, FusionWeights, VoiceSegment, VoiceTimeline, fold_vector
    from emolens.voice import default_speech_model

    model = default_speech_model()
    files = [ravdess / "Actor_23" / f"03-01-0{e}-02-01-01-23.ogg" for e in (3, 4, 5)]
    raw = [model.raw_features(load_audio(f)) for f in files]
    segs = [VoiceSegment(i, i + 1.0, fold_vector(model.predict_features(r)[0], model.labels), r) for i, r in
            enumerate(raw)]
    fuser = AVFuser(VoiceTimeline(segs), "both", FusionWeights.equal())
    first = fuser.voice_for(0, track_id=1)
    assert first.shape == (7,) and first.sum() == pytest.approx(1, abs=1e-4)
    fuser.voice_for(1, track_id=1)
    heard_before = fuser.voice_for(2, track_id=1)  # person 1's statistics now hold three segments
    new_person = fuser.voice_for(2, track_id=2)  # the same sound from a person heard for the first time
    assert not np.allclose(heard_before, new_person)
    assert np.allclose(fuser.voice_for(2, track_id=1), heard_before)  # cached: a segment counts once


# ----------------------------------------------------------------------------- speaker encoder


def test_speech_encoder_embeddings(ravdess: Path) -> None:
    """The shipped GE2E encoder: two unit vectors per utterance, closer within a speaker than across
    (mean cosine over a few utterances of two actors)."""
    from emolens.voice.encoder import EMBED_DIM, SpeechEncoder, encoder_feature_names

    enc = SpeechEncoder()
    files = {a: sorted((ravdess / f"Actor_{a}").glob("03-01-0[1-5]-01-01-01-*.ogg")) for a in ("23", "24")}
    emb = {a: np.stack([enc.embed(load_audio(f)) for f in fs]) for a, fs in files.items()}
    e = emb["23"][0]
    assert e.shape == (EMBED_DIM,) == (len(encoder_feature_names()),) and np.isfinite(e).all()
    for half in (e[:256], e[256:]):
        assert np.linalg.norm(half) == pytest.approx(1, abs=1e-3)
    a, b = emb["23"][:, 256:], emb["24"][:, 256:]
    assert len(a) == len(b) == 5
    assert (a @ a.T).mean() > (a @ b.T).mean() + 0.1 and (b @ b.T).mean() > (a @ b.T).mean() + 0.1
    short = enc.embed(np.zeros(800, np.float32))  # 50 ms of silence: no crash, still finite
    assert np.isfinite(short).all()


def test_speech_encoder_frame_states(ravdess: Path) -> None:
    """The encoder's second output: mean and standard deviation over time of its top LSTM layer
    (tanh-bounded, so means in [-1, 1] and spreads in [0, 1]); they move with how a sentence is
    said, not only with who says it: one actor's neutral and angry takes differ more than the
    two takes of either."""
    from emolens.train.speech_recipe import MultiConfig, feature_names
    from emolens.voice.encoder import STATES_DIM, SpeechEncoder, state_feature_names

    enc = SpeechEncoder()
    takes = {e: [load_audio(ravdess / "Actor_23" / f"03-01-{e}-01-01-{r}-23.ogg") for r in ("01", "02")]
             for e in ("01", "05")}  # neutral, angry; normal intensity; both repetitions
    st = {e: np.stack([enc.states(a) for a in audio]) for e, audio in takes.items()}
    s = st["01"][0]
    assert s.shape == (STATES_DIM,) == (len(state_feature_names()),) and np.isfinite(s).all()
    assert np.abs(s[:256]).max() <= 1 and s[256:].min() >= 0 and s[256:].max() <= 1
    within = np.mean([np.linalg.norm(v[0] - v[1]) for v in st.values()])
    assert np.linalg.norm(st["01"].mean(0) - st["05"].mean(0)) > within
    assert np.isfinite(enc.states(np.zeros(800, np.float32))).all()
    a = takes[next(iter(takes))][0]  # one pass for both: the same values as two calls
    assert np.array_equal(enc.embed(a, states=True), np.concatenate([enc.embed(a), enc.states(a)]))
    cfg = MultiConfig(encoder=True, states=True)
    assert cfg.kinds == ("functionals", "encoder", "states")
    assert feature_names(cfg)[-STATES_DIM:] == state_feature_names()
    with pytest.raises(ValueError, match="states needs encoder"):
        MultiConfig(encoder=False, states=True)


def test_shipped_model_reads_the_encoder_it_names() -> None:
    meta = json.loads(DEFAULT_SPEECH_MODEL.with_suffix(".json").read_text())
    model = SpeechEmotionModel()
    if meta.get("encoder"):
        assert model.encoder is not None and (DEFAULT_SPEECH_MODEL.parent / meta["encoder"]).is_file()
        n_func = len(functional_names())
        assert max(meta["normalization"]["columns"]) >= n_func  # some columns are encoder values
    else:
        assert model.encoder is None
    raw = model.raw_features(np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32))
    assert raw.shape == (len(meta["normalization"]["columns"]),)


def test_mood_needs_per_speaker_statistics_on_the_command_line(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from emolens.cli import app

    for args in (["evaluate", "speech", "--data", str(tmp_path), "--protocol", "corpora"],
                 ["train", "speech", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--model", "functionals"]):
        res = CliRunner().invoke(app, [*args, "--norm", "global", "--mood", "1"])
        assert res.exit_code == 2 and "mood needs norm online or speaker" in res.output, res.output
        assert "Traceback" not in res.output


def test_cli_loco_reports_and_saves_the_cold_start_partner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``evaluate speech --protocol corpora`` (synthetic corpora in place of the real features):
    the table has the pipeline's columns, ``--logits`` holds both networks' held-out logits."""
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from emolens.cli import app
    from emolens.train import speech_multi

    data, feats = _synthetic_corpora(2, 0.5, one_mood="c", shift=3.0)
    monkeypatch.setattr(speech_multi, "load_features", lambda *a, **k: (data, feats, np.arange(feats.shape[-1])))
    args = ["evaluate", "speech", "--data", str(tmp_path), "--protocol", "corpora", "--corpora", "b,c",
            "--hidden", "16", "--epochs", "60", "--copies", "1", "--json", str(tmp_path / "loco.json"),
            "--logits", str(tmp_path / "loco.npz")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "UAR with the cold-start partner" in res.output and "with the cold-start partner: UAR" in res.output
    saved = json.loads((tmp_path / "loco.json").read_text())
    assert set(saved["corpora"]["c"]["pipeline"]) >= {"uar", "macro_f1", "confusion"}
    assert len(saved["pipeline_temperatures"]) == 2
    with np.load(tmp_path / "loco.npz") as z:
        scored = np.abs(z["logits"]).sum(1) > 0
        assert scored.sum() == 2 * 96 and (np.abs(z["logits_cold"]).sum(1) > 0).tolist() == scored.tolist()
        assert z["logits_pipeline"].shape == z["logits"].shape
    res = CliRunner().invoke(app, [*args, "--no-cold-start"])
    assert res.exit_code == 0 and "cold-start partner" not in res.output, res.output
