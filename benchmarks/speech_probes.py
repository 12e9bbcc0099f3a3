"""Leave-one-corpus-out probes of the voice recipe: what moves URDU and TurEV, and at what cost.

Each probe changes one thing in the earlier recipe (``emolens train speech --model functionals
--copies 2 --norm online --encoder``, the cold-start model's but for its normalisation:
per-speaker normalisation with 8 prior pseudo-observations, MLP 128, 150 epochs, seed 0) and
reruns the leave-one-corpus-out protocol on the cached features (``runs/speech_features``; built
on first use, about 30 min). The shipped model came out of ``lstm_adversary`` (now the recipe,
with the states from the ONNX encoder); the ``shipped`` probe is the recipe before it. The model
card quotes the tables.

    OMP_NUM_THREADS=1 python benchmarks/speech_probes.py [--probes NAME ...] [--data ../shared/data]

Writes ``benchmarks/results/speech_probes.{md,json}``.

Probes:

* ``shipped``: that recipe as it is (the main model until ``lstm_adversary`` replaced it).
* ``global``: global instead of per-speaker normalisation (``--norm global``).
* ``both_views``: per-speaker and globally normalised features side by side (2 x 730 inputs).
* ``same_emotion_history``: as ``both_views``, and a third of the augmented copies are normalised
  with statistics drawn only from the same speaker's files of the same emotion (a person heard in
  one mood only, as URDU's speaker ids are).
* ``prior24``: 24 instead of 8 prior pseudo-observations in the per-speaker statistics.
* ``wide``: MLP 256 with dropout 0.5.
* ``smooth``: label smoothing 0.2 instead of 0.05.
* ``copies4``: 4 instead of 2 augmented copies per file (extracts copies 3 and 4 on first use).
* ``kws``: the recipe plus a third representation, Google's ``speech_embedding`` (a keyword-spotting
  encoder over 32 mel bands; its ONNX weights ship inside the Apache-2.0 ``openwakeword`` 0.4.0
  wheel: ``pip install --no-deps openwakeword==0.4.0``): the mean and standard deviation of its
  96-value embeddings over 0.76 s windows (80 ms hop), 192 more inputs.
* ``encoder_global``: the speaker-encoder values normalised globally, the functionals per speaker.
* ``functionals_global``: the functionals normalised globally, the speaker-encoder values per speaker.
* ``egemaps`` / ``compare``: the recipe plus openSMILE's eGeMAPSv02 (88) or ComParE_2016 (6,373)
  utterance functionals (``pip install opensmile``; its binary ships inside the wheel, under
  audEERING's research licence), per-speaker normalised like the rest.
* ``egemaps_instead`` / ``compare_instead``: openSMILE's set in place of the numpy functionals
  (speaker-encoder values kept).
* ``functionals_alone`` / ``egemaps_alone``: the numpy functionals alone, or openSMILE's eGeMAPSv02
  alone (no speaker encoder): the two classic functional sets side by side.
* ``cold_start``: a model for voices heard for the first time: every training copy (clean and
  augmented) is normalised as its speaker's first utterance (the statistics of that file alone,
  shrunk with the prior), as the first-utterance score normalises the test files. Compare its
  first-utterance column (``--first-utterance``) with the shipped recipe's.
* ``crop``: the augmented copies are also cut in length: the speech part of each file (leading and
  trailing silence trimmed), then with p 0.7 a random 0.5-2.0 s window of it, before the usual
  channel/room augmentation, so the model also learns from short stretches of speech (a single
  word, as in TurEV, or a short voice-activity segment of a video). Its own feature cache
  (``-crop`` in the file names; extracted on first use, about 5 min per copy).
* ``dims``: an auxiliary loss (weight 0.5) on the arousal and valence of the prediction: the
  expected position on Russell's circumplex under the predicted distribution against the label's
  (``speech_mlp.AROUSAL_VALENCE``, fixed per class), so confusing a calm voice with an angry
  one costs more than with a sad one; arousal is what carries best across languages.
* ``speaker_dims``: per-speaker statistics only for the inputs that mostly tell speakers apart;
  the others normalised globally. For each input, the training corpora give the variance of the
  speakers' means (each speaker's mean over its per-emotion means) and of the emotions' effects
  within a speaker; inputs where the speaker share is above one half are normalised per speaker.
  The split is computed without the held-out corpus (without RAVDESS for ``--ravdess-cv``).
* ``lstm``: the recipe plus the speaker encoder's frame-level states: the mean and standard
  deviation over time of its top LSTM layer's output (2 x 256 more inputs; torch and the
  Resemblyzer wheel, ``pip install --no-deps resemblyzer``). The shipped embedding keeps only the
  last state, projected and normalised for speaker identity; the frames also carry how the voice
  moves within the utterance.
* ``lstm_adversary``: ``lstm`` with the corpus adversary (weight 1) and 5 seeds merged, the setting
  in which the adversary lifted TurEV above its floor without the frame-level states.
* ``mood``: mood-aware per-speaker statistics (``--mood 1``, :func:`emolens.train.speech_multi.fit_fold`):
  each file's estimated emotion effect (the training corpora's class effects weighted by a
  cold-start partner's posterior, then by the model's own) is taken out before its speaker's
  statistics, so a speaker heard in one emotion only (URDU's speaker ids) keeps it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
PROBES = ("shipped", "global", "both_views", "same_emotion_history", "prior24", "wide", "smooth", "copies4", "kws",
          "encoder_global", "functionals_global", "egemaps", "compare", "egemaps_instead",
          "compare_instead", "functionals_alone", "egemaps_alone", "cold_start", "crop", "dims",
          "speaker_dims", "lstm", "lstm_adversary", "mood")


def both_views(base: Callable) -> Callable:
    """A normaliser giving ``[per-speaker view, global view]`` (``base`` makes the per-speaker one)."""
    def normalized(feats: np.ndarray, data, cfg, mean: np.ndarray, var: np.ndarray) -> np.ndarray:  # noqa: ANN001
        z = base(feats, data, cfg, mean, var)
        g = ((feats - mean) / np.sqrt(var)).astype(np.float32)
        return np.concatenate([z, g], axis=-1)
    return normalized


def partly_global(base: Callable, encoder_global: bool) -> Callable:
    """A normaliser like ``base`` where one feature group (the speaker encoder's columns, last, or
    the functionals before them) is normalised with the global statistics instead."""
    from emolens.voice.encoder import encoder_feature_names

    n_encoder = len(encoder_feature_names())

    def normalized(feats: np.ndarray, data, cfg, mean: np.ndarray, var: np.ndarray) -> np.ndarray:  # noqa: ANN001
        z = base(feats, data, cfg, mean, var)
        cols = np.zeros(feats.shape[-1], dtype=bool)
        cols[-n_encoder:] = True
        cols = cols if encoder_global else ~cols
        z[..., cols] = ((feats[..., cols] - mean[cols]) / np.sqrt(var[cols])).astype(np.float32)
        return z
    return normalized


def same_emotion_history(share: float = 1 / 3) -> Callable:
    """A normaliser like :func:`emolens.train.speech_norm.normalized` (online mode) where a
    ``share`` of the augmented items take their history only from same-emotion files of their
    speaker; returns both views (:func:`both_views`)."""
    from emolens.train.speech_norm import group_normalize
    from emolens.voice.speakers import shrunk_stats

    def online(f: np.ndarray, data, mean: np.ndarray, var: np.ndarray, prior: float,  # noqa: ANN001
               rng: np.random.Generator, sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 0)) -> np.ndarray:
        out = np.empty_like(f, dtype=np.float32)
        x64 = f.astype(np.float64)
        for g in np.unique(data.speakers):
            idx = np.flatnonzero(data.speakers == g)
            for i in idx:
                pool = idx[idx != i]
                if rng.random() < share:
                    pool = pool[data.labels[pool] == data.labels[i]]
                n = min(int(rng.choice(sizes)) or len(pool) + 1, len(pool) + 1)
                others = rng.choice(pool, size=n - 1, replace=False) if n > 1 else np.zeros(0, dtype=int)
                sub = x64[np.concatenate([[i], others])]
                m, sd = shrunk_stats(len(sub), sub.sum(0), (sub * sub).sum(0), mean, var, prior)
                out[i] = ((x64[i] - m) / sd).astype(np.float32)
        return out

    def speaker_view(feats: np.ndarray, data, cfg, mean: np.ndarray, var: np.ndarray) -> np.ndarray:  # noqa: ANN001
        rng = np.random.default_rng(cfg.seed + 17)
        return np.stack([group_normalize(f, data.speakers, mean, var, cfg.prior) if c == 0
                         else online(f, data, mean, var, cfg.prior, rng) for c, f in enumerate(feats)])

    return both_views(speaker_view)


def speaker_share(x: np.ndarray, data, idx: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """Per input, the share of the between-speaker variance in speaker + emotion variance over the
    items ``idx`` (each corpus weighing the same; speaker means balanced over its emotions)."""
    z = (x[idx] - x[idx].mean(0)) / (x[idx].std(0) + 1e-8)
    spk_var, emo_var = [], []
    for c in np.unique(data.corpora[idx]):
        sel = data.corpora[idx] == c
        means, effects = [], []
        for s in np.unique(data.speakers[idx][sel]):
            m = sel & (data.speakers[idx] == s)
            cells = np.stack([z[m & (data.labels[idx] == e)].mean(0) for e in np.unique(data.labels[idx][m])])
            means.append(cells.mean(0))
            effects.append(cells - cells.mean(0))
        means_a = np.stack(means)
        spk_var.append(((means_a - means_a.mean(0)) ** 2).mean(0))
        emo_var.append((np.concatenate(effects) ** 2).mean(0))
    sv, ev = np.mean(spk_var, 0), np.mean(emo_var, 0)
    return sv / (sv + ev + 1e-12)


def speaker_dims(base: Callable, held_out: list[str]) -> Callable:
    """A normaliser like ``base`` where only the inputs whose :func:`speaker_share` (from the
    corpora other than ``held_out[0]``) is above one half keep the per-speaker statistics."""
    def normalized(feats: np.ndarray, data, cfg, mean: np.ndarray, var: np.ndarray) -> np.ndarray:  # noqa: ANN001
        z = base(feats, data, cfg, mean, var)
        idx = np.flatnonzero(data.corpora != held_out[0])
        per_speaker = speaker_share(feats[0].astype(np.float64), data, idx) > 0.5
        print(f"[speaker_dims without {held_out[0]}] {int(per_speaker.sum())} of {len(per_speaker)} inputs "
              "per speaker", flush=True)
        z[..., ~per_speaker] = ((feats[..., ~per_speaker] - mean[~per_speaker])
                                / np.sqrt(var[~per_speaker])).astype(np.float32)
        return z
    return normalized


def kws_embedder() -> Callable[[np.ndarray], np.ndarray]:
    """``audio (16 kHz float) -> float32 (192,)``: mean and std of openwakeword's speech embeddings."""
    import importlib.util

    import onnxruntime as ort

    spec = importlib.util.find_spec("openwakeword")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the kws probe needs the openwakeword 0.4.0 wheel: pip install --no-deps openwakeword==0.4.0")
    models = Path(list(spec.submodule_search_locations)[0]) / "resources" / "models"
    if not (models / "embedding_model.onnx").is_file():
        sys.exit(f"no embedding_model.onnx under {models}: install openwakeword 0.4.0 (later wheels carry no models)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    mel_s, emb_s = (ort.InferenceSession(str(models / f), opts, providers=["CPUExecutionProvider"])
                    for f in ("melspectrogram.onnx", "embedding_model.onnx"))

    def embed(audio: np.ndarray) -> np.ndarray:
        x = (np.clip(audio, -1, 1) * 32767).astype(np.float32)[None]
        mel = np.atleast_2d(mel_s.run(None, {"input": x})[0].squeeze()) / 10 + 2  # openwakeword's scaling
        if len(mel) < 76:
            mel = np.concatenate([mel, np.repeat(mel[-1:], 76 - len(mel), 0)])
        batch = np.stack([mel[s: s + 76] for s in range(0, len(mel) - 75, 8)])[..., None].astype(np.float32)
        e = emb_s.run(None, {"input_1": batch})[0].reshape(len(batch), 96)
        return np.concatenate([e.mean(0), e.std(0)]).astype(np.float32)

    return embed


def smile_embedder(feature_set: str) -> Callable[[np.ndarray], np.ndarray]:
    """``audio (16 kHz float) -> float32 (D,)``: openSMILE's functionals of ``feature_set``
    (``eGeMAPSv02``: 88, ``ComParE_2016``: 6,373), from the ``opensmile`` wheel (its binary ships
    inside; audEERING research licence): ``pip install opensmile``."""
    try:
        import opensmile
    except ImportError:
        sys.exit("the egemaps/compare probes need openSMILE: pip install opensmile")
    smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                            feature_level=opensmile.FeatureLevel.Functionals)

    def embed(audio: np.ndarray) -> np.ndarray:
        x = smile.process_signal(np.asarray(audio, np.float32), 16000).to_numpy(np.float32)[0]
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    return embed


def lstm_embedder() -> Callable[[np.ndarray], np.ndarray]:
    """``audio (16 kHz float) -> float32 (512,)``: mean and std over frames of the GE2E encoder's
    top LSTM layer output, on the same loudness-normalised mel input as the shipped embedding."""
    import torch

    from emolens.train.speech_encoder import load_ge2e
    from emolens.voice.encoder import speech_encoder

    torch.set_num_threads(1)
    net = load_ge2e()
    encoder = speech_encoder()

    def embed(audio: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            frames = net.lstm(torch.from_numpy(encoder.mel(audio)[None]).float())[0][0].numpy()
        return np.concatenate([frames.mean(0), frames.std(0)]).astype(np.float32)

    return embed


#: Extra representations a probe can add to the recipe: kind -> (dimension, embedder factory).
EXTRA_KINDS: dict[str, tuple[int, Callable[[], Callable[[np.ndarray], np.ndarray]]]] = {
    "kws": (192, kws_embedder),
    "egemaps": (88, lambda: smile_embedder("eGeMAPSv02")),
    "compare": (6373, lambda: smile_embedder("ComParE_2016")),
    "lstm": (512, lstm_embedder),
}


def speech_crop(audio: np.ndarray, rng: np.random.Generator, p: float = 0.7,
                lengths: tuple[float, float] = (0.5, 2.0), rate: int = 16000) -> np.ndarray:
    """The speech part of ``audio`` (silence trimmed 40 dB below the loudest 10 ms frame), and with
    probability ``p`` a random window of it lasting ``lengths`` seconds (uniform)."""
    hop = rate // 100
    n = len(audio) // hop
    if n < 3:
        return audio
    level = 10 * np.log10(np.square(audio[: n * hop].reshape(n, hop)).mean(1) + 1e-10)
    loud = np.flatnonzero(level > level.max() - 40)
    x = audio[loud[0] * hop: (loud[-1] + 1) * hop]
    if rng.random() < p:
        size = int(rng.uniform(*lengths) * rate)
        if len(x) > size:
            start = int(rng.integers(0, len(x) - size + 1))
            x = x[start: start + size]
    return x


def cropping(sf) -> Callable[[], None]:  # noqa: ANN001
    """Make :mod:`emolens.train.speech_features` crop the augmented copies (:func:`speech_crop`)
    before augmenting them, with cache keys of their own; returns the undo."""
    key, augment = sf._key, sf.augment_audio

    def crop_key(paths: list[str], copy: int) -> str:
        return key(paths, copy) + ("-crop" if copy else "")

    def crop_augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return augment(speech_crop(audio, rng), rng)

    sf._key, sf.augment_audio = crop_key, crop_augment

    def undo() -> None:
        sf._key, sf.augment_audio = key, augment
    return undo


def with_extra(sr, sf, base, extra: tuple[str, ...], functionals: bool = True):  # noqa: ANN001, ANN201
    """A config class reading the ``extra`` feature kinds (:data:`EXTRA_KINDS`) after the recipe's
    own (without its numpy functionals if not ``functionals``), with the cache and name hooks they need."""
    from dataclasses import dataclass

    for kind in EXTRA_KINDS:
        sf.KINDS.setdefault(kind, f"-{kind}")
    extractors, names = sf._extractors, sr.feature_names

    def _extractors(kinds: list[str]) -> dict:
        out = extractors([k for k in kinds if k not in EXTRA_KINDS])
        out.update({k: EXTRA_KINDS[k][1]() for k in kinds if k in EXTRA_KINDS})
        return out

    @dataclass
    class ExtraConfig(sr.MultiConfig):
        @property
        def kinds(self) -> tuple[str, ...]:
            return (*(k for k in super().kinds if functionals or k != "functionals"), *extra)

    def feature_names(cfg) -> list[str]:  # noqa: ANN001
        if not isinstance(cfg, ExtraConfig):
            return names(cfg)
        from emolens.voice.features import functional_names

        own = names(cfg)[0 if functionals else len(functional_names()):]
        return own + [f"{k}_{i}" for k in extra for i in range(EXTRA_KINDS[k][0])]

    sf._extractors, sr.feature_names = _extractors, feature_names
    return ExtraConfig(**{f: getattr(base, f) for f in base.__dataclass_fields__})


def main() -> None:
    """Run the probes and write the results."""
    from emolens.train import speech_features as sf
    from emolens.train import speech_multi as sm
    from emolens.train import speech_recipe as sr

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--probes", nargs="+", default=list(PROBES), choices=PROBES)
    ap.add_argument("--out", type=Path, default=RESULTS / "speech_probes.md")
    ap.add_argument("--first-utterance", action="store_true",
                    help="also report each corpus's UAR with every test file scored as its speaker's first utterance")
    ap.add_argument("--ravdess-cv", action="store_true",
                    help="also run RAVDESS 8-class speaker-independent CV (6 folds) for each probe")
    args = ap.parse_args()

    shipped = sr.MultiConfig(hidden=128, epochs=150, copies=2, norm="online", prior=8.0, encoder=True, threads=1)
    configs = {"shipped": shipped, "global": replace(shipped, norm="global", prior=0.0),
               "both_views": shipped, "same_emotion_history": shipped, "prior24": replace(shipped, prior=24.0),
               "wide": replace(shipped, hidden=256, dropout=0.5), "smooth": replace(shipped, label_smoothing=0.2),
               "copies4": replace(shipped, copies=4), "encoder_global": shipped, "functionals_global": shipped}
    if "lstm" in args.probes or "lstm_adversary" in args.probes:
        configs["lstm"] = with_extra(sr, sf, shipped, ("lstm",))
        configs["lstm_adversary"] = replace(configs["lstm"], adversary=1.0, seeds=5)
    for name in ("kws", "egemaps", "compare"):
        if name in args.probes:
            configs[name] = with_extra(sr, sf, shipped, (name,))
    for name in ("egemaps_instead", "compare_instead"):
        if name in args.probes:
            configs[name] = with_extra(sr, sf, shipped, (name.split("_")[0],), functionals=False)
    configs["functionals_alone"] = replace(shipped, encoder=False)
    configs["cold_start"] = replace(shipped, norm="first")  # the recipe of speech_emotion_cold.onnx
    configs["crop"] = shipped  # same recipe; its augmented copies are cut in length (cropping)
    configs["dims"] = replace(shipped, dims=0.5)
    configs["speaker_dims"] = shipped
    configs["mood"] = replace(shipped, mood=1.0)
    held_out = [""]
    split = sm.loco_split

    def tracked_split(data, corpus: str):  # noqa: ANN001, ANN202 - tells speaker_dims the held-out corpus
        held_out[0] = corpus
        return split(data, corpus)

    sm.loco_split = tracked_split
    if "egemaps_alone" in args.probes:
        configs["egemaps_alone"] = with_extra(sr, sf, replace(shipped, encoder=False), ("egemaps",), functionals=False)
    plain = sm.normalized
    normalisers = {"both_views": both_views(plain), "same_emotion_history": same_emotion_history(),
                   "encoder_global": partly_global(plain, True), "functionals_global": partly_global(plain, False),
                   "speaker_dims": speaker_dims(plain, held_out)}
    rows = []
    for name in args.probes:
        cfg = configs[name]
        start = time.perf_counter()
        undo = cropping(sf) if name == "crop" else None
        try:
            data, feats, _ = sr.load_features(args.data, cfg)
        finally:
            if undo:
                undo()
        sm.normalized = normalisers.get(name, plain)  # protocol_corpora looks it up at call time
        try:
            res = sm.protocol_corpora(data, feats, cfg, log=False)
            held_out[0] = "ravdess"
            cv = (sm.protocol_speakers(data, feats, cfg, corpora=["ravdess"], log=False)["corpora"]["ravdess"]
                  if args.ravdess_cv else None)
        finally:
            sm.normalized = plain
        uar = {c: round(float(r["uar"]), 4) for c, r in res["corpora"].items()}
        rows.append({"probe": name, "uar": uar, "seconds": round(time.perf_counter() - start, 1)})
        if args.first_utterance:
            rows[-1]["first_utterance_uar"] = {c: round(float(r["first_utterance_uar"]), 4)
                                               for c, r in res["corpora"].items()}
        if cv is not None:
            rows[-1]["ravdess_cv_accuracy"] = round(float(cv["accuracy"]), 4)
        print(name, uar, *([f"RAVDESS CV {cv['accuracy']:.3f}"] if cv is not None else []), flush=True)
    corpora = list(rows[0]["uar"])
    chance = {c: round(float(r["chance_uar"]), 4) for c, r in res["corpora"].items()}
    lines = ["# Voice recipe probes: leave-one-corpus-out UAR", "",
             f"- date: {datetime.date.today().isoformat()}",
             f"- machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}",
             f"- command: `OMP_NUM_THREADS=1 python benchmarks/speech_probes.py {' '.join(sys.argv[1:])}`".rstrip(),
             "- floor: 2x chance UAR on every corpus (" + ", ".join(f"{c} {2 * chance[c]:.3f}" for c in corpora) + ")",
             "", "| probe | " + " | ".join(corpora) + " |"
             + ("".join(f" {c}, first utterance |" for c in corpora) if args.first_utterance else "")
             + (" RAVDESS speaker-CV accuracy |" if args.ravdess_cv else ""),
             "|---|" + "---:|" * (len(corpora) * (1 + args.first_utterance) + args.ravdess_cv)]
    lines += [f"| {r['probe']} | " + " | ".join(f"{r['uar'][c]:.3f}" for c in corpora) + " |"
              + ("".join(f" {r['first_utterance_uar'][c]:.3f} |" for c in corpora) if args.first_utterance else "")
              + (f" {r['ravdess_cv_accuracy']:.3f} |" if args.ravdess_cv else "") for r in rows]
    lines += ["", "Probes: see the docstring of `benchmarks/speech_probes.py`. Each row trains 4 models "
              "(one per held-out corpus), seed 0"
              + (" (`lstm_adversary`: seeds 0-4, merged)" if "lstm_adversary" in args.probes else "")
              + "; the first columns are leave-one-corpus-out UAR"
              + (" (each file normalised with all of its speaker's files), then the same models with every test "
                 "file scored as its speaker's first utterance" if args.first_utterance else "")
              + (". `cold_start` normalises every file as a first utterance, the test files too, so its two "
                 "column groups are the same score" if "cold_start" in args.probes else "")
              + (", the last RAVDESS 6-fold speaker-CV accuracy (6 more models)." if args.ravdess_cv else ".")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"date": datetime.date.today().isoformat(),
                                                          "chance_uar": chance, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
