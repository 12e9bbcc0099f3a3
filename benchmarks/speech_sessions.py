"""Voices heard only a few times: leave-one-corpus-out UAR scored the way the pipeline scores a
person, segment by segment with statistics accumulated online, in short sessions.

For each held-out corpus, the shipped recipe's two networks are trained on the other corpora (the
main model, ``--norm online``, and the cold-start model, ``--norm first``, each with the
configuration in its shipped JSON, features included). Each test
speaker's files are shuffled and cut into sessions of ``S`` files (a person saying ``S``
things in a video; ``all``: one session per speaker). Within a session the k-th file is normalised
with the shrunk statistics of files 1..k, as :class:`emolens.voice.SpeakerNormalizer` does, and
scored by three rules:

* ``main only``: the main model for every file;
* ``cold first``: the cold-start model for the first file of a session, the main model after it;
* ``mixed``: both, the cold-start model weighted by :func:`emolens.voice.speakers.cold_share`
  (1 for the first file, then ``prior / (prior + k - 1)``): the pipeline's rule before ``one mood``;
* ``one mood``: as ``mixed``, but the cold-start weight is raised to
  :func:`emolens.voice.speakers.one_mood_share` of the session's cold-start posteriors so far
  (a person whose files all sound alike keeps the cold-start model): the pipeline's rule;
* ``one mood alone``: the cold-start model weighted by ``one_mood_share`` alone (no ``cold_share``).

Probabilities are temperature-scaled with each shipped model's temperature. Each UAR is the mean
over ``--shuffles`` orders (seeds 0, 1, ...); the JSON keeps every one.

    OMP_NUM_THREADS=1 python benchmarks/speech_sessions.py [--data ../shared/data]

Writes ``benchmarks/results/speech_sessions.{md,json}`` (about 4 min on one core with the feature
cache of ``emolens train speech`` in ``runs/speech_features``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "src" / "emolens" / "models"
RESULTS = REPO / "benchmarks" / "results"
RULES = ("main only", "cold first", "mixed", "one mood", "one mood alone")


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _scored(net, temperature: float, z: np.ndarray) -> np.ndarray:  # noqa: ANN001
    from emolens.train.speech_mlp import logits_of

    return _log_softmax(logits_of(net, z) / temperature)


def session_scores(x: np.ndarray, sessions: list[np.ndarray], stats: tuple[np.ndarray, np.ndarray], prior: float,
                   score_main, score_cold, x_cold: np.ndarray | None = None,  # noqa: ANN001
                   stats_cold: tuple[np.ndarray, np.ndarray] | None = None,
                   t_cold: float = 1.0) -> dict[str, np.ndarray]:
    """Log-probabilities ``(N, classes)`` of every rule for the rows of ``x`` in ``sessions``
    (index arrays, in the order heard); ``score_*``: normalised rows -> log-probabilities;
    ``x_cold``, ``stats_cold``: the cold-start model's own features and global (mean, var) where
    they differ from the main model's; ``t_cold``: the cold-start model's temperature (its
    untempered posteriors feed the ``one mood`` rule's history)."""
    from emolens.voice.speakers import ONE_MOOD, MoodHistory, SpeakerNormalizer, cold_share, one_mood_share

    norm = SpeakerNormalizer(stats[0], np.sqrt(stats[1]), prior)
    x_cold = x if x_cold is None else x_cold
    sc = stats if stats_cold is None else stats_cold
    norm_cold = SpeakerNormalizer(sc[0], np.sqrt(sc[1]), prior)
    out: dict[str, np.ndarray] = {}
    for session, order in enumerate(sessions):
        hist, alone = [], []
        for i in order:  # as the pipeline hears a person: update, then normalise with what is known so far
            norm.update(x[i], session)
            hist.append(norm.normalize(x[i], session))
            alone.append(norm_cold.normalize_alone(x_cold[i]))
        lm, lc = score_main(np.array(hist)), score_cold(np.array(alone))
        w = np.array([cold_share(k + 1, prior) for k in range(len(order))])[:, None]
        first = (np.arange(len(order)) == 0)[:, None]
        post = np.exp(lc * t_cold)  # the cold-start posteriors untempered, as the model's history keeps them
        post /= post.sum(1, keepdims=True)
        moods = MoodHistory()
        gate = np.zeros_like(w)
        for k in range(len(order)):
            moods.add(post[k])
            gate[k] = one_mood_share(moods.diversity(), *ONE_MOOD)
        one = np.maximum(w, gate)
        rules = {"main only": lm, "cold first": np.where(first, lc, lm),
                 "mixed": np.log(w * np.exp(lc) + (1 - w) * np.exp(lm)),
                 "one mood": np.log(one * np.exp(lc) + (1 - one) * np.exp(lm)),
                 "one mood alone": np.log(gate * np.exp(lc) + (1 - gate) * np.exp(lm))}
        for name, v in rules.items():
            out.setdefault(name, np.zeros((len(x), v.shape[1])))[order] = v
    return out


def main() -> None:
    """Train per held-out corpus, score the sessions, write the table."""
    from emolens.train import speech_multi as sm
    from emolens.train import speech_norm as sn
    from emolens.train import speech_recipe as sr
    from emolens.train import speech_report as srep

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 0], help="session sizes (0: all of a speaker)")
    ap.add_argument("--shuffles", type=int, default=5, help="orders of each speaker's files to average over")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"no speech corpora under {args.data}")
    meta = {k: json.loads((MODELS / f"{k}.json").read_text()) for k in ("speech_emotion", "speech_emotion_cold")}
    t_main, t_cold = (float(meta[k].get("temperature", 1.0)) for k in meta)
    prior = float(meta["speech_emotion"]["normalization"]["prior"])
    known = set(sr.MultiConfig.__dataclass_fields__)
    cfgs = {name: sr.MultiConfig(**{k: v for k, v in meta[m]["config"].items() if k in known})
            for name, m in (("main", "speech_emotion"), ("cold", "speech_emotion_cold"))}
    data, feats, _ = sr.load_features(args.data, cfgs["main"])
    feats_cold = feats if cfgs["cold"].kinds == cfgs["main"].kinds else sr.load_features(args.data, cfgs["cold"])[1]
    x, x_cold = feats[0].astype(np.float64), feats_cold[0].astype(np.float64)
    result: dict = {}
    spread: dict = {}
    for corpus in dict.fromkeys(data.corpora.tolist()):
        train, test, classes = sm.loco_split(data, corpus)
        stats = {"main": sn.global_stats(feats, train), "cold": sn.global_stats(feats_cold, train)}
        nets = {name: sm.train_on(data, sn.normalized(f, data, cfgs[name], *stats[name]), train, cfgs[name])
                for name, f in (("main", feats), ("cold", feats_cold))}
        local = {int(i): j for j, i in enumerate(test)}
        result[corpus] = {}
        for size in args.sizes:
            runs: dict[str, list[float]] = {rule: [] for rule in RULES}
            for seed in range(args.shuffles):
                rng = np.random.default_rng(seed)
                sessions = []
                for spk in dict.fromkeys(data.speakers[test].tolist()):
                    idx = np.array([local[int(i)] for i in rng.permutation(test[data.speakers[test] == spk])])
                    sessions += [idx] if size == 0 else [idx[a: a + size] for a in range(0, len(idx), size)]
                scores = session_scores(x[test], sessions, stats["main"], prior, partial(_scored, nets["main"], t_main),
                                        partial(_scored, nets["cold"], t_cold), x_cold[test], stats["cold"],
                                        t_cold)
                for rule in RULES:
                    runs[rule].append(srep.corpus_report(data.labels[test], scores[rule], classes, data.classes)["uar"])
            result[corpus][str(size or "all")] = {rule: round(float(np.mean(v)), 4) for rule, v in runs.items()}
            spread.setdefault(corpus, {})[str(size or "all")] = {r: [round(u, 4) for u in v] for r, v in runs.items()}
        print(corpus, result[corpus], flush=True)
    corpora = list(result)
    lines = ["# A voice heard a few times: leave-one-corpus-out UAR in short sessions", "",
             f"- date: {datetime.date.today().isoformat()}",
             f"- machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}",
             "- command: `" + " ".join(["OMP_NUM_THREADS=1 python benchmarks/speech_sessions.py", *sys.argv[1:]]) + "`",
             f"- statistics prior: {prior:g} pseudo-observations; temperatures: main {t_main:.3f}, cold {t_cold:.3f}; "
             f"mean of {args.shuffles} orders of each speaker's files",
             "", "| files per session | rule | " + " | ".join(corpora) + " |", "|---|---|" + "---:|" * len(corpora)]
    for size in result[corpora[0]]:
        for rule in RULES:
            cells = []
            for c in corpora:
                v = result[c][size][rule]
                cells.append(f"**{v:.3f}**" if v == max(result[c][size].values()) else f"{v:.3f}")
            lines.append(f"| {size} | {rule} | " + " | ".join(cells) + " |")
    lines += ["", "Rules: see the docstring of `benchmarks/speech_sessions.py`; `one mood` is what the pipeline does "
              "(`SpeechEmotionModel.predict_normalized`). Bold: the best rule for that corpus and session size."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "speech_sessions.md"
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"date": datetime.date.today().isoformat(), "prior": prior,
                                                     "temperatures": [t_main, t_cold], "shuffles": args.shuffles,
                                                     "uar": result, "uar_per_shuffle": spread}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
