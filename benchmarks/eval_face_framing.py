"""Face crops vs full photos: `emolens evaluate face --framing crop|auto|detect` on image folders.

Three labelled image folders, written to a temporary directory:

* ``fer_crops``: FER2013 PrivateTest (3,589 faces) as 48x48 PNGs, the framing the model was trained on;
* ``fer_in_frame``: the same faces upscaled 4x (192 px) and placed at a random position in a
  640x480 frame whose edge pixels are replicated outwards (a face that fills a fifth of the
  picture's width, as in a webcam or studio photo);
* ``real_photos``: 5 evenly spaced frames of each labelled CREMA-D video in
  ``../shared/media/labeled_av`` (actor 1001, six emotions, 480x360) and the three portraits whose
  names carry a label in ``../shared/media/photos`` (33 images).

Each folder is scored with each framing (the folder loader and the model that ``evaluate face``
uses) and the table goes to ``benchmarks/results/face_framing.md`` (and ``.json``).

    python benchmarks/eval_face_framing.py [--model default] [--data ../shared/data/fer2013/fer2013.csv.xz]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np

from emolens.datasets import load_fer2013, load_image_folder
from emolens.expression import ExpressionModel
from emolens.face_crops import FRAMINGS, FaceCropper
from emolens.labels import FER7, normalize_label
from emolens.metrics import classification_report, group_accuracy

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PORTRAITS = {"portrait_angry.png": "angry", "portrait_happy.png": "happy", "portrait_sad.png": "sad"}


def write_fer(images: np.ndarray, labels: np.ndarray, root: Path, in_frame: bool) -> None:
    """One PNG per face under ``root/<class>/``; ``in_frame``: 4x upscaled, placed in a 640x480 frame."""
    rng = np.random.default_rng(0)
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / FER7[label]
        folder.mkdir(parents=True, exist_ok=True)
        if in_frame:
            face = cv2.resize(img, (192, 192), interpolation=cv2.INTER_CUBIC)
            left, top = int(rng.integers(0, 640 - 192)), int(rng.integers(0, 480 - 192))
            img = cv2.copyMakeBorder(face, top, 480 - 192 - top, left, 640 - 192 - left, cv2.BORDER_REPLICATE)
        cv2.imwrite(str(folder / f"{i:05d}.png"), img)


def write_real(media: Path, root: Path, per_clip: int = 5) -> int:
    """Frames of the labelled CREMA-D videos and the labelled portraits under ``root/<class>/``."""
    from emolens.media import VideoSource

    n = 0
    with open(media / "labeled_av" / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["file"].endswith(".flv")]
    for row in rows:
        frames = []
        with VideoSource(str(media / "labeled_av" / row["file"])) as source:
            frames = [frame.image for frame in source]
        folder = root / normalize_label(row["emotion"])
        folder.mkdir(parents=True, exist_ok=True)
        for k in np.linspace(0, len(frames) - 1, per_clip + 2)[1:-1].round().astype(int):
            cv2.imwrite(str(folder / f"{Path(row['file']).stem}_{k:03d}.png"), frames[k])
            n += 1
    for name, label in PORTRAITS.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), cv2.imread(str(media / "photos" / name)))
        n += 1
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "fer2013" / "fer2013.csv.xz")
    parser.add_argument("--media", type=Path, default=SHARED / "media")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "face_framing.md")
    args = parser.parse_args()
    if not args.data.is_file() or not args.media.is_dir():
        print(f"needs {args.data} and {args.media}", file=sys.stderr)
        return 2
    net = ExpressionModel(args.model)
    test = load_fer2013(args.data, "PrivateTest")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"fer_crops": Path(tmp) / "fer_crops", "fer_in_frame": Path(tmp) / "fer_in_frame",
                   "real_photos": Path(tmp) / "real_photos"}
        write_fer(test.images, test.labels, folders["fer_crops"], in_frame=False)
        write_fer(test.images, test.labels, folders["fer_in_frame"], in_frame=True)
        write_real(args.media, folders["real_photos"])
        for name, folder in folders.items():
            for framing in FRAMINGS:
                start = time.perf_counter()
                cropper = FaceCropper(framing, net.spec.frame, net.spec.template)
                data = load_image_folder(folder, net.spec.frame, cropper)
                pred = net.predict(data.images).argmax(1)
                report = classification_report(data.labels, pred, data.classes)
                groups = group_accuracy(data.framing, data.labels, pred)
                rows.append({"folder": name, "framing": framing, "n": len(data), "accuracy": report["accuracy"],
                             "macro_f1": report["macro_f1"], "groups": groups,
                             "seconds": round(time.perf_counter() - start, 1)})
                print(name, framing, f"{report['accuracy']:.4f}", groups, flush=True)
    command = f"python benchmarks/eval_face_framing.py --model {args.model}"
    lines = [
        "# Face crops vs full photos (`evaluate face --framing`)", "",
        f"Model `{args.model}` ({net.path.name}); {date.today()}; {platform.processor() or platform.machine()}, "
        f"2 cores. Command: `{command}`. See the script's docstring for how the folders are made.", "",
        "| folder | images | framing | accuracy | macro-F1 | how the faces were cut (accuracy) | seconds |",
        "| --- | ---: | --- | ---: | ---: | --- | ---: |",
    ]
    for r in rows:
        how = ", ".join(f"{k} {g['n']} ({g['accuracy']:.3f})" for k, g in r["groups"].items())
        lines.append(f"| {r['folder']} | {r['n']} | {r['framing']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                     f"{how} | {r['seconds']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "date": str(date.today()),
                                                         "model": args.model, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
