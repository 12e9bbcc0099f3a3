"""Face-only, voice-only and fused accuracy on the labelled audio-visual clips.

Data: ``../shared/media/labeled_av`` (CREMA-D actor 1001: 6 video clips with face and
speech, one per emotion; actor 1002: 6 audio-only clips). eNTERFACE'05 could not be
obtained. Writes ``benchmarks/results/fusion_labeled_av.{json,md}``.

    python benchmarks/eval_fusion.py
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


def main() -> None:
    """Run the video pipeline (both modalities) on each clip and compare with the labels."""
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
        "photos; RAVDESS studio speech), so this is also a small cross-corpus check. eNTERFACE'05",
        "could not be obtained. The fusion weights are learned from each model's in-domain held-out",
        "F1 (FER2013 PublicTest, RAVDESS actor-wise CV); when one modality transfers badly to a new",
        "corpus, as the speech model does to CREMA-D here, the fused label can be worse than the",
        "better single modality. Weights fitted on target-domain validation data would fix that.",
    ]
    (RESULTS / "fusion_labeled_av.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
