"""Face-only, voice-only and fused accuracy: the labelled AV clips and the pairing test bed.

Labelled clips: ``../shared/media/labeled_av`` (CREMA-D actor 1001: 6 video clips with face and
speech, one per emotion; actor 1002: 6 audio-only clips). eNTERFACE'05 could not be
obtained. Writes ``benchmarks/results/fusion_labeled_av.{json,md}``.

    python benchmarks/eval_fusion.py

Pairing test bed (``--pairing OOF.npz``, the held-out speech logits written by
``emolens train speech --model functionals``: ``corpora_logits.npz``, each corpus predicted by a
model trained on the other corpora, so the voice is as unfamiliar as in real use): FER2013 faces paired
with held-out speech clips of the same (folded) label. The speech clips' speakers are split in
two halves; the fusion is fitted on PublicTest faces x half A (temperatures, per-class weights,
confidence slopes, biases: :mod:`emolens.train.fusion`; the strength of the fit's pull towards plain
product-of-experts chosen by leave-one-voice-corpus-out cross-validation), written to ``--out`` (default
``src/emolens/models/fusion.json``), and scored on PrivateTest faces x half B. **Assumption:**
face and voice are independent given the label (they come from different people), so the
fused gain is an optimistic estimate of what real audio-visual recordings give.
Writes ``benchmarks/results/fusion_pairing.{json,md}``.

    python benchmarks/eval_fusion.py --pairing runs/speech_enc/corpora_logits.npz

``--sweep`` (with ``--pairing``) also refits the fusion with every strength of that pull: 5-fold
cross-validated NLL and accuracy on the fitting pairs (folds mixing the corpora), accuracy on
the test bed, and the labelled video clips re-fused offline from the pipeline's per-frame face and
voice probabilities. The shipped fusion is not changed by it.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AV = REPO.parent / "shared" / "media" / "labeled_av"
RESULTS = REPO / "benchmarks" / "results"


def face_fer_probs(cache_dir: Path = REPO / "runs") -> dict:
    """The default face model's probabilities on FER2013 PublicTest and PrivateTest (cached per model file)."""
    import hashlib

    import numpy as np

    from emolens.datasets import load_fer2013
    from emolens.expression import ExpressionModel

    model = ExpressionModel(threads=1)
    cache = cache_dir / f"face_fer_probs.{hashlib.sha256(model.path.read_bytes()).hexdigest()[:12]}.npz"
    if cache.is_file():
        return dict(np.load(cache))
    out = {}
    for split in ("PublicTest", "PrivateTest"):
        d = load_fer2013(REPO.parent / "shared" / "data" / "fer2013" / "fer2013.csv.xz", split)
        out[f"{split}_probs"], out[f"{split}_labels"] = model.predict(d.images), d.labels
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def clip_frames() -> list[tuple]:
    """Per-frame face and voice probabilities of the labelled video clips (pipeline run once)."""
    import numpy as np
    import pandas as pd

    from emolens.fusion import FUSION_LABELS
    from emolens.video import VideoAnalyzer, VideoOptions

    analyzer = VideoAnalyzer(VideoOptions(modality="both"))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in sorted(AV.glob("*.flv")):
            analyzer.run(clip, tmp, annotate=False)
            df = pd.read_csv(Path(tmp) / f"{clip.stem}.frames.csv")
            out.append((clip.name, df[[f"p_{c}" for c in FUSION_LABELS]].to_numpy(np.float64),
                        df[[f"p_voice_{c}" for c in FUSION_LABELS]].to_numpy(np.float64)))
    return out


def l2_sweep(pf, pv, y, t_face: float, t_voice: float, test_bed, clips, l2s=None, voice_prior=None):  # noqa: ANN001
    """Cross-validated NLL / accuracy, test-bed accuracy and labelled-clip score per L2 strength."""
    import numpy as np

    from emolens.fusion import FUSION_LABELS
    from emolens.train.fusion import L2_GRID, fit_fusion, nll

    l2s = l2s or L2_GRID
    with open(AV / "labels.csv", newline="") as fh:
        truth = {row["file"]: row["emotion"] for row in csv.DictReader(fh)}
    folds = np.random.default_rng(1).integers(0, 5, len(y))
    rows = []
    for l2 in l2s:
        ll, acc = [], []
        for k in range(5):
            tr, te = folds != k, folds == k
            lp = fit_fusion(pf[tr], pv[tr], y[tr], t_face, t_voice, l2=l2,
                            voice_prior=voice_prior).fuse_log(pf[te], pv[te])
            ll.append(nll(lp, y[te]))
            acc.append(float((lp.argmax(1) == y[te]).mean()))
        fusion = fit_fusion(pf, pv, y, t_face, t_voice, l2=l2, voice_prior=voice_prior)
        bed = float(np.mean([(fusion.fuse_log(a, b).argmax(1) == t).mean() for a, b, t, kind in test_bed
                             if kind == "familiar"]))
        right = 0
        for name, f, v in clips:
            voiced = ~np.isnan(v).any(1)
            fused = f.copy()
            fused[voiced] = np.exp(fusion.fuse_log(f[voiced], v[voiced]))
            right += FUSION_LABELS[int(fused.sum(0).argmax())] == truth[name]
        rows.append({"l2": l2, "cv_nll": float(np.mean(ll)), "cv_accuracy": float(np.mean(acc)),
                     "test_bed_accuracy": bed, "clips_right": int(right), "clips": len(clips)})
    return rows


def pairing(oof_path: Path, out_json: Path, seeds: int = 5, sweep: bool = False, cold: Path | None = None) -> dict:
    """Fit the calibrated fusion on PublicTest x speakers A, score it on PrivateTest x speakers B.

    The fit uses each clip scored with its speaker's full statistics (a familiar voice). Where the
    logits file has ``logits_first`` (each clip scored as its speaker's first utterance: a new
    voice) the test bed is also scored with those; ``cold`` (the cold-start model's LOCO logits,
    ``norm="first"``) replaces them with what the shipped pipeline uses for a voice's first segment,
    and is mixed into the familiar voices as the pipeline mixes it (the cold start's share set by
    the speaker's number of files and the one-mood rule,
    :func:`emolens.voice.speakers.speaker_cold_weights`); without ``cold`` the logits file's own
    ``logits_cold`` (``emolens evaluate speech --protocol corpora --logits``) are used where present."""
    import numpy as np

    from emolens.fusion import FUSION_LABELS, FusionWeights, fold_vector
    from emolens.labels import FOLD_TO_FER7
    from emolens.train.fusion import fit_fusion, fit_temperature, pair_by_label, select_l2
    from emolens.voice.speakers import speaker_cold_weights

    sys.path.insert(0, str(Path(__file__).parent))
    from eval_speech_ensemble import cnn_probs

    z = np.load(oof_path)
    classes = [str(c) for c in z["classes"]]
    meta = json.loads((REPO / "src" / "emolens" / "models" / "speech_emotion.json").read_text())
    t_model = float(meta.get("temperature", 1.0))
    prior = float(meta["normalization"].get("prior", 8.0))
    w = float(meta["ensemble"].get("weight", 0.5)) if meta.get("ensemble") else 0.0  # the CNN's share, if shipped
    # held out: every EmoDB / URDU / TurEV clip (leave-one-corpus-out logits; the CNN, where it is part of
    # the shipped model, never heard them) and RAVDESS actors 23-24 (held out by every model)
    paths = [str(Path(q).resolve()) for q in z["paths"].tolist()]
    speakers_all = np.asarray(z["speakers"]).astype(str)
    keep = np.array([not s.startswith("ravdess/") or s in ("ravdess/23", "ravdess/24") for s in speakers_all])
    lc = None
    if w > 0:
        cnn = cnn_probs([q for q, k in zip(paths, keep) if k])
        lc = np.log(np.clip(np.stack([cnn[q] for q, k in zip(paths, keep) if k]), 1e-7, 1))

    def probs(raw: np.ndarray, t: float) -> np.ndarray:
        """Temperature-scaled class probabilities (ensembled with the CNN where it is shipped)."""
        lf = raw / t
        lf = lf - lf.max(1, keepdims=True)
        lf = lf - np.log(np.exp(lf).sum(1, keepdims=True))
        if lc is not None:
            lf = (1 - w) * lf + w * lc
        e = np.exp(lf)
        return e / e.sum(1, keepdims=True)

    def folded(p: np.ndarray) -> np.ndarray:
        return np.stack([fold_vector(q, classes) for q in p])

    p_warm = probs(z["logits"][keep], t_model)
    warm = folded(p_warm)
    new_voice = folded(probs(z["logits_first"][keep], t_model)) if "logits_first" in z else None
    cold_logits = None
    if cold is not None:
        zc = np.load(cold)
        if zc["paths"].tolist() != z["paths"].tolist():
            sys.exit(f"{cold} and {oof_path} do not hold the same clips in the same order")
        cold_logits = zc["logits_first"]
    elif "logits_cold" in z:  # evaluate speech --protocol corpora --logits: both networks in one file
        cold_logits = z["logits_cold"]
    if cold_logits is not None:
        cold_meta = json.loads((REPO / "src" / "emolens" / "models" / "speech_emotion_cold.json").read_text())
        p_cold = probs(cold_logits[keep], float(cold_meta.get("temperature", 1.0)))
        new_voice = folded(p_cold)
        # a familiar voice as the pipeline scores it: both networks, the cold start's share set by
        # how many files of that speaker the statistics hold and, where the model names it, by the
        # one-mood rule on the cold start's untempered posteriors (SpeechEmotionModel.cold_weight)
        one_mood = meta.get("cold_start", {}).get("one_mood")
        share = speaker_cold_weights(probs(cold_logits[keep], 1.0), speakers_all[keep], prior,
                                     tuple(one_mood) if one_mood else None)[:, None]
        warm = folded(share * p_cold + (1 - share) * p_warm)
    speakers = speakers_all[keep]
    vy = np.array([FUSION_LABELS.index(FOLD_TO_FER7[classes[k]]) for k in z["labels"][keep]])
    names = sorted(set(speakers.tolist()))
    half_a = np.isin(speakers, names[0::2])
    face = face_fer_probs()
    fa_p, fa_y = face["PublicTest_probs"].astype(np.float64), face["PublicTest_labels"]
    fb_p, fb_y = face["PrivateTest_probs"].astype(np.float64), face["PrivateTest_labels"]
    t_face = fit_temperature(fa_p, fa_y)
    t_voice = fit_temperature(warm[half_a], vy[half_a])
    rng = np.random.default_rng(0)
    ia = np.flatnonzero(half_a)[pair_by_label(fa_y, vy[half_a], rng)]
    voice_corpus = np.asarray(z["corpora"]).astype(str)[keep][ia]
    # the voice model's prior over its own classes (uniform: class-balanced training) folded onto the
    # fusion labels, divided out before fusing so the product counts each class's prior once
    voice_prior = fold_vector(np.full(len(classes), 1.0 / len(classes)), classes)
    l2, selection = select_l2(fa_p, warm[ia], fa_y, voice_corpus, t_face, t_voice, voice_prior=voice_prior)
    source = {
        "rule": "calibrated log-linear fusion (per-class reliability weights, confidence slopes, class biases; "
                f"L2 pull {l2:g} towards the product of the temperature-scaled modalities)",
        "fitted_on": "FER2013 PublicTest faces (face model held-out split) paired by label with held-out speech "
                     "clips of speaker half A (EmoDB, URDU, TurEV and RAVDESS actors 23-24; the shipped voice "
                     "model's leave-one-corpus-out predictions" + (", ensembled with the CNN that never heard them)"
                                                                  if w > 0 else ")"),
        "voice_oof": str(oof_path), "assumption": "face and voice independent given the label",
        "l2": l2, "l2_selected_by": "lowest leave-one-voice-corpus-out NLL on the fitting pairs "
                                    "(benchmarks/results/fusion_pairing.md)",
        "command": f"python benchmarks/eval_fusion.py --pairing {oof_path}",
    }
    fusion = fit_fusion(fa_p, warm[ia], fa_y, t_face, t_voice, l2=l2, source=source, voice_prior=voice_prior)
    fusion.save(out_json)
    rel_face = [np.mean(fa_p.argmax(1)[fa_y == c] == c) for c in range(7)]
    rel_voice = [np.mean(warm[half_a].argmax(1)[vy[half_a] == c] == c) for c in range(7)]
    old = FusionWeights.from_reliability(np.array(rel_face), np.array(rel_voice))
    rows, bed = [], []
    half_b = np.flatnonzero(~half_a)
    kinds = [("familiar", warm)] + ([("new", new_voice)] if new_voice is not None else [])
    for seed in range(seeds):
        pick = pair_by_label(fb_y, vy[~half_a], np.random.default_rng(100 + seed))
        ok = pick >= 0
        pf, y, idx = fb_p[ok], fb_y[ok], half_b[pick[ok]]
        for kind, voice in kinds:
            pv = voice[idx]
            bed.append((pf, pv, y, kind))
            fused = fusion.fuse_log(pf, pv).argmax(1)
            lin = np.stack([old.fuse(a, b)[0] for a, b in zip(pf, pv)]).argmax(1)
            poe = (np.log(np.clip(pf, 1e-7, 1)) + np.log(np.clip(pv, 1e-7, 1)) - np.log(voice_prior)).argmax(1)
            rows.append({"seed": seed, "voice_history": kind, "n": int(ok.sum()),
                         "face": float((pf.argmax(1) == y).mean()), "voice": float((pv.argmax(1) == y).mean()),
                         "fused": float((fused == y).mean()),
                         "weighted_mean_by_accuracy": float((lin == y).mean()), "product": float((poe == y).mean())})
    keys = [k for k in rows[0] if k not in ("seed", "n", "voice_history")]
    mean = {kind: {k: float(np.mean([r[k] for r in rows if r["voice_history"] == kind])) for k in keys}
            for kind, _ in kinds}
    result = {"rows": rows, "mean": mean, "t_face": t_face, "t_voice": t_voice,
              "fusion": fusion.to_dict(), "speakers_fit": names[0::2], "speakers_test": names[1::2],
              "l2_selection": selection}
    if sweep:
        result["l2_sweep"] = l2_sweep(fa_p, warm[ia], fa_y, t_face, t_voice, bed, clip_frames() if AV.exists() else [],
                                      voice_prior=voice_prior)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fusion_pairing.json").write_text(json.dumps(result, indent=2))
    lines = ["# Pairing test bed: FER2013 PrivateTest faces x held-out speech of the same label", "",
             f"command: `python benchmarks/eval_fusion.py --pairing {oof_path}{' --sweep' if sweep else ''}"
             f"{f' --cold {cold}' if cold else ''}`", "",
             "Voice history: *familiar* = each clip normalised with its speaker's full statistics (a person heard "
             "for a while" + ("; scored as the pipeline scores it, main and cold-start models mixed by the number of "
                              "the speaker's files and the one-mood rule" if cold_logits is not None else "") + "); "
             "*new* = each clip scored as its speaker's first utterance (a voice heard for the first "
             "time, e.g. a short clip)" + (", by the cold-start model the pipeline uses for a voice's first segment"
                                           if cold_logits is not None else "") + ".", "",
             "| | voice history | face | voice | fused (calibrated) | weighted mean (per-class accuracy) | product |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             *(f"| seed {r['seed']} (n={r['n']}) | {r['voice_history']} | {r['face']:.4f} | {r['voice']:.4f} | "
               f"{r['fused']:.4f} | {r['weighted_mean_by_accuracy']:.4f} | {r['product']:.4f} |" for r in rows),
             *(f"| **mean** | {kind} | {m['face']:.4f} | {m['voice']:.4f} | **{m['fused']:.4f}** | "
               f"{m['weighted_mean_by_accuracy']:.4f} | {m['product']:.4f} |" for kind, m in mean.items()), "",
             f"Temperatures: face {t_face:.3f}, voice {t_voice:.3f}. Face and voice are assumed independent given",
             "the label (different people), so the fused gain is optimistic for real recordings. The voice is divided",
             "by its model's class prior folded onto the 7 labels (neutral " + f"{voice_prior[-1]:.3f}, the others "
             f"{voice_prior[0]:.3f}) before it is fused, in the `product` column too.", "",
             "Strength of the fit's L2 pull towards plain product-of-experts, chosen by leave-one-voice-corpus-out",
             "cross-validation on the fitting pairs (PublicTest x speakers A): fitted on the pairs whose voices come",
             "from three corpora, scored on the pairs of the fourth (on the labels the three have), so the choice",
             f"rewards a fit that carries over to a kind of voice it never saw. Chosen: **{l2:g}**.", "",
             "| rule | L2 | NLL | accuracy | pairs scored |", "| --- | --- | --- | --- | --- |",
             *(f"| {r['rule']} | {'-' if r['l2'] is None else format(r['l2'], 'g')} | {r['nll']:.4f} | "
               f"{r['accuracy']:.4f} | {r['n']} |" for r in selection),
             "", "`product`: the temperature-scaled modalities multiplied, nothing fitted; `face`: the face alone."]
    if sweep:
        lines += ["", f"The same L2 strengths (shipped: {l2:g}) against 5-fold cross-validation that mixes the corpora",
                  "(random folds of the",
                  "fitting pairs, PublicTest x speakers A); test bed: mean of the familiar rows; clips: the labelled",
                  "video clips re-fused offline from the pipeline's per-frame probabilities.", "",
                  "| L2 | CV NLL | CV accuracy | test-bed accuracy | labelled clips right |",
                  "| --- | --- | --- | --- | --- |",
                  *(f"| {r['l2']:g} | {r['cv_nll']:.4f} | {r['cv_accuracy']:.4f} | {r['test_bed_accuracy']:.4f} | "
                    f"{r['clips_right']}/{r['clips']} |" for r in result["l2_sweep"])]
    (RESULTS / "fusion_pairing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def main() -> None:
    """Run the video pipeline (both modalities) on each clip and compare with the labels."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairing", type=Path, help="held-out speech logits (corpora_logits.npz: leave-one-corpus-out): "
                    "run the test bed")
    ap.add_argument("--out", type=Path, default=REPO / "src" / "emolens" / "models" / "fusion.json")
    ap.add_argument("--sweep", action="store_true", help="with --pairing: also compare L2 strengths of the fit")
    ap.add_argument("--cold", type=Path, help="with --pairing: the cold-start model's LOCO logits (corpora_logits.npz "
                    "of `emolens train speech --norm first`) for the new-voice rows")
    args = ap.parse_args()
    if args.pairing:
        pairing(args.pairing, args.out, sweep=args.sweep, cold=args.cold)
        return
    from emolens.fusion import FUSION_LABELS, fold_vector
    from emolens.video import VideoAnalyzer, VideoOptions
    from emolens.voice import AudioAnalyzer

    if not AV.exists():
        sys.exit(f"needs {AV}")
    with open(AV / "labels.csv", newline="") as fh:
        labels = {row["file"]: row["emotion"] for row in csv.DictReader(fh)}
    analyzer = VideoAnalyzer(VideoOptions(modality="both"))
    audio = AudioAnalyzer()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, truth in sorted(labels.items()):
            path = AV / name
            if path.suffix == ".flv":
                s = analyzer.run(path, tmp, annotate=False)
                rows.append({"file": name, "truth": truth, "face": s["label_face"], "voice": s["label_voice"],
                             "fused": s["label_fused"]})
            else:
                r = audio.analyze_file(path)
                voice = FUSION_LABELS[int(fold_vector(r.probs).argmax())] if r.probs else None
                rows.append({"file": name, "truth": truth, "face": None, "voice": voice, "fused": voice})

    def acc(key: str, subset: list[dict]) -> str:
        scored = [r for r in subset if r[key] is not None]
        return f"{sum(r[key] == r['truth'] for r in scored)}/{len(scored)}" if scored else "-"

    video_rows = [r for r in rows if r["file"].endswith(".flv")]
    summary = {
        "video_clips": {k: acc(k, video_rows) for k in ("face", "voice", "fused")},
        "audio_only_clips": {"voice": acc("voice", [r for r in rows if r not in video_rows])},
    }
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, Python {platform.python_version()}",
            "command": "python benchmarks/eval_fusion.py"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fusion_labeled_av.json").write_text(json.dumps({**meta, "rows": rows, "summary": summary}, indent=2))
    lines = [
        "# Face, voice and fused decisions on the labelled AV clips", "",
        f"- date: {meta['date']}; command: `{meta['command']}`", "",
        "| clip | truth | face | voice | fused |", "| --- | --- | --- | --- | --- |",
        *(f"| {r['file']} | {r['truth']} | {r['face'] or '-'} | {r['voice'] or '-'} | {r['fused'] or '-'} |"
          for r in rows),
        "",
        f"Correct on the 6 video clips (actor 1001): face {summary['video_clips']['face']}, "
        f"voice {summary['video_clips']['voice']}, fused {summary['video_clips']['fused']}. "
        f"Voice on the 6 audio-only clips (actor 1002): {summary['audio_only_clips']['voice']}.",
        "",
        "**What this can and cannot show.** Twelve clips from two actors, one sentence, one clip per",
        "emotion: a single clip flips a score by 17 points, so these numbers show that the pipeline",
        "runs end to end and how the modalities disagree on real acted clips, not which one is more",
        "accurate in general. CREMA-D differs from the training data of both models (FER2013 web",
        "photos; RAVDESS, EmoDB, URDU and TurEV speech), so this is also a small cross-corpus check.",
        "eNTERFACE'05 could not be obtained. The fusion (models/fusion.json) is calibrated and fitted on",
        "held-out data (`--pairing`: FER2013 PublicTest faces x speech of speakers the voice model never",
        "heard), not on in-domain F1, so a voice that transfers badly gets little say.",
    ]
    (RESULTS / "fusion_labeled_av.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
