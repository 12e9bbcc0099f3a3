"""emolens vs the `fer` package, side by side in one run, on this machine.

1. FER2013 PrivateTest (all 3,589 rows): accuracy, macro-F1, rare-class recall and classifier
   throughput (faces/second, batched and one face per call) of emolens' two shipped models
   (``default`` and ``accurate``) and of
   fer's bundled mini-Xception (its own preprocessing: 64x64, (x/255-0.5)*2); also the accuracy
   against the FER+ majority vote of 10 annotators (``fer2013new.csv``; faces whose majority is
   ``contempt`` or that have no usable vote left out, as ``emolens evaluate face --ferplus``).
2. Videos (``../shared/media/video``): end-to-end FPS (decode + detect + classify; emolens
   also tracks) and faces found per frame vs the true count.

`fer` needs TensorFlow, so it runs in its own virtualenv (never an emolens dependency):

    python -m venv benchmarks/.venv-fer
    benchmarks/.venv-fer/bin/pip install tensorflow-cpu "opencv-contrib-python-headless<5" pandas \
        matplotlib tqdm "moviepy<2" ffmpeg-python requests Pillow setuptools
    benchmarks/.venv-fer/bin/pip install --no-deps fer
    python benchmarks/fer_side_by_side.py            # writes benchmarks/results/fer_side_by_side.{json,md}

This script re-runs itself inside that venv (``--worker``) for fer's half; the worker
imports nothing from emolens.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FER_CSV = SHARED / "data" / "fer2013" / "fer2013.csv.xz"
FERPLUS_CSV = SHARED / "data" / "fer2013" / "fer2013new.csv"
VIDEOS = {"one_face_640x360.mp4": 1, "one_face_1280x720.mp4": 1, "multi_face.mp4": 4}
RESULTS = REPO / "benchmarks" / "results"


# ----------------------------------------------------------------------------- fer worker
def _fer_worker(task: str, arg: str, out: str) -> None:
    """Runs inside the fer venv: classify FER2013 crops, or run fer on videos."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import cv2
    from fer.fer import FER

    detector = FER(mtcnn=False)
    result: dict = {}
    if task == "fer2013":
        images = np.load(arg)
        faces = np.stack([cv2.resize(im, (64, 64)) for im in images]).astype("float32")
        faces = (faces / 255.0 - 0.5) * 2.0
        detector._classify_emotions(faces[:64])  # warm-up
        t = time.perf_counter()
        probs = np.asarray(detector._classify_emotions(faces))
        result["batched_s"] = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(200):
            detector._classify_emotions(faces[i: i + 1])
        result["single_faces_per_s"] = 200 / (time.perf_counter() - t)
        np.save(out + ".probs.npy", probs)
    else:
        for path in arg.split(os.pathsep):
            cap = cv2.VideoCapture(path)
            ok, frame = cap.read()
            if ok:
                detector.detect_emotions(frame)  # warm-up (model build)
            cap.release()
            cap = cv2.VideoCapture(path)
            frames, faces = 0, []
            t = time.perf_counter()
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                faces.append(len(detector.detect_emotions(frame)))
                frames += 1
            elapsed = time.perf_counter() - t
            result[Path(path).name] = {"frames": frames, "fps": frames / elapsed, "faces_per_frame": faces}
    Path(out).write_text(json.dumps(result))


def run_fer(fer_python: str, task: str, arg: str) -> dict:
    """Run the fer worker in its venv and return its JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "fer.json")
        cmd = [fer_python, __file__, "--worker", task, arg, out]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"fer worker failed:\n{proc.stderr[-3000:]}")
        result = json.loads(Path(out).read_text())
        if task == "fer2013":
            result["probs"] = np.load(out + ".probs.npy")
        return result


# ----------------------------------------------------------------------------- emolens side
def bench_fer2013(fer_python: str) -> dict:
    """Accuracy and throughput of both classifiers on FER2013 PrivateTest."""
    from emolens.datasets import ferplus_targets, load_fer2013, load_fer2013_arrays, load_ferplus_votes
    from emolens.expression import ExpressionModel
    from emolens.labels import FER7, FERPLUS8
    from emolens.metrics import classification_report

    test = load_fer2013(FER_CSV, "PrivateTest")
    runs: list[tuple[str, np.ndarray, float, float]] = []
    for name in ("default", "accurate"):
        model = ExpressionModel(name, threads=os.cpu_count())
        model.predict(test.images[:64])
        t = time.perf_counter()
        ours = model.predict(test.images)
        ours_s = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(200):
            model.predict(test.images[i: i + 1])
        runs.append((f"emolens {name}", ours, ours_s, 200 / (time.perf_counter() - t)))
    with tempfile.TemporaryDirectory() as tmp:
        npy = os.path.join(tmp, "private.npy")
        np.save(npy, test.images)
        fer = run_fer(fer_python, "fer2013", npy)
    runs.append(("fer", fer["probs"], fer["batched_s"], fer["single_faces_per_s"]))
    plus = FERPLUS_CSV.is_file()
    kept = np.zeros(len(test), bool)
    if plus:  # the FER+ majority, on the faces `evaluate face --ferplus` keeps
        relabelled = load_fer2013(FER_CSV, "PrivateTest", FERPLUS_CSV, relabel=True)
        _, _, usage = load_fer2013_arrays(FER_CSV)
        votes, _ = load_ferplus_votes(FERPLUS_CSV)
        majority, _, valid = ferplus_targets(votes[usage == "PrivateTest"])
        kept = valid & (majority != FERPLUS8.index("contempt"))
        assert kept.sum() == len(relabelled)
    rows = {}
    for name, probs, batched_s, single in runs:
        rep = classification_report(test.labels, np.asarray(probs).argmax(1), FER7)
        rows[name] = {
            **({"accuracy_ferplus": float((np.asarray(probs)[kept].argmax(1) == majority[kept]).mean()),
                "n_ferplus": int(kept.sum())} if plus else {}),
            "accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"],
            "faces_per_s_batched": len(test) / batched_s, "faces_per_s_single": single,
            "per_class_recall": {k: v["recall"] for k, v in rep["per_class"].items()},
        }
    for row in rows.values():
        row["throughput_vs_fer"] = row["faces_per_s_batched"] / rows["fer"]["faces_per_s_batched"]
    return {"n": len(test), "models": rows}


def bench_videos(fer_python: str) -> dict:
    """End-to-end FPS and faces per frame of both tools on the benchmark clips."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_video import measure_emolens  # the video benchmark's measurement

    paths = [str(SHARED / "media" / "video" / name) for name in VIDEOS]
    fer = run_fer(fer_python, "video", os.pathsep.join(paths))
    rows = {}
    for name, truth in VIDEOS.items():
        ours = measure_emolens(SHARED / "media" / "video" / name, ["--no-annotate", "--modality", "face"], truth)
        f = fer[name]
        rows[name] = {
            "true_faces": truth,
            "emolens_fps": ours["fps"], "fer_fps": f["fps"], "speedup": ours["fps"] / f["fps"],
            "emolens_mean_faces": ours["faces_per_frame"],
            "fer_mean_faces": float(np.mean(f["faces_per_frame"])),
            "emolens_frames_exact": ours.get("frames_with_true_count"),
            "fer_frames_exact": float(np.mean(np.asarray(f["faces_per_frame"]) == truth)),
        }
    return rows


def machine() -> dict:
    """Where and when this ran."""
    from _common import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def to_markdown(res: dict) -> str:
    """Results as a markdown report."""
    m = res["machine"]
    lines = [
        "# emolens vs fer, side by side", "",
        f"- machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}", f"- date: {m['date']}",
        f"- command: `{res['command']}`", "",
    ]
    if "fer2013" in res:
        models = res["fer2013"]["models"]
        plus = all("accuracy_ferplus" in r for r in models.values())
        lines += ["## FER2013 PrivateTest (3,589 faces)", "",
                  "| model | accuracy | macro-F1 | recall disgust | recall fear | faces/s (batched) "
                  "| vs fer | faces/s (one per call) |" + (" accuracy, FER+ majority |" if plus else ""),
                  "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if plus else "")]
        for name, r in models.items():
            rec = r["per_class_recall"]
            lines.append(f"| {name} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {rec['disgust']:.3f} | "
                         f"{rec['fear']:.3f} | {r['faces_per_s_batched']:.0f} | {r['throughput_vs_fer']:.2f}x "
                         f"| {r['faces_per_s_single']:.0f} |" + (f" {r['accuracy_ferplus']:.4f} |" if plus else ""))
        if plus:
            n = next(iter(models.values()))["n_ferplus"]
            lines += ["", f"The FER+ column scores the {n:,} faces whose FER+ majority vote (10 annotators) is one "
                      "of the 7 classes against that vote (as `emolens evaluate face --ferplus`)."]
        lines.append("")
    if "video" in res:
        lines += ["## Videos, end to end (decode + detect + classify), 2 cores", "",
                  "| clip | true faces | emolens FPS | fer FPS | speed-up | emolens faces/frame | fer faces/frame "
                  "| frames with the true count: emolens / fer |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in res["video"].items():
            lines.append(f"| {name} | {r['true_faces']} | {r['emolens_fps']:.1f} | {r['fer_fps']:.1f} | "
                         f"{r['speedup']:.2f}x | {r['emolens_mean_faces']:.2f} | {r['fer_mean_faces']:.2f} | "
                         f"{r['emolens_frames_exact']:.2f} / {r['fer_frames_exact']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the comparison and write benchmarks/results/fer_side_by_side.{json,md}."""
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _fer_worker(*sys.argv[2:5])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fer-python", default=str(REPO / "benchmarks" / ".venv-fer" / "bin" / "python"))
    ap.add_argument("--only", choices=["fer2013", "video"], default=None)
    ap.add_argument("--out", default=str(RESULTS / "fer_side_by_side"))
    args = ap.parse_args()
    if not Path(args.fer_python).exists():
        sys.exit(f"fer's virtualenv not found at {args.fer_python}; see this script's docstring")
    if not SHARED.exists():
        sys.exit(f"needs {SHARED} (the shared data folder next to the repo)")
    res: dict = {"machine": machine(), "command": "python benchmarks/fer_side_by_side.py " + " ".join(sys.argv[1:])}
    if args.only in (None, "fer2013"):
        res["fer2013"] = bench_fer2013(args.fer_python)
    if args.only in (None, "video"):
        res["video"] = bench_videos(args.fer_python)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".{args.only}" if args.only else ""
    out.with_name(out.name + suffix + ".json").write_text(json.dumps(res, indent=2))
    out.with_name(out.name + suffix + ".md").write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    main()
