"""Heat maps (occlusion, Grad-CAM), activations and region evidence on the real photos and FER2013 PrivateTest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import emolens
from emolens.explanations import (
    REGIONS,
    activation_maps,
    deletion_drops,
    deletion_test,
    face_regions,
    gradcam_maps,
    occlusion_map,
    region_deltas,
    region_evidence,
    saliency_maps,
)
from emolens.expression import ExpressionModel, default_model
from emolens.labels import FER7

GROUP = "group_friends_6faces.jpg"
PORTRAIT = "portrait_frontal_smile.jpg"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emolens.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def photos(media: Path) -> Path:
    folder = media / "photos"
    if not (folder / GROUP).is_file() or not (folder / PORTRAIT).is_file():
        pytest.skip(f"needs {folder / GROUP} and {folder / PORTRAIT}")
    return folder


@pytest.fixture(scope="module")
def model() -> ExpressionModel:
    return default_model("default")


@pytest.mark.parametrize("name", [PORTRAIT, GROUP, "group_family_7faces.jpg"])
def test_explain_one_map_per_face(photos: Path, name: str) -> None:
    if not (photos / name).is_file():
        pytest.skip(f"needs {photos / name}")
    found = emolens.explain(photos / name)
    assert len(found) == len(emolens.analyze_image(photos / name).faces) >= 1
    for e in found:
        assert e.heatmap.shape == (48, 48) and e.crop.shape == (48, 48)
        assert float(e.heatmap.std()) > 0
        assert e.label == max(e.probs, key=e.probs.get) and list(e.probs) == list(FER7)
        x, y, w, h = e.image_box
        assert e.image_heatmap.shape == (h, w) and float(e.image_heatmap.std()) > 0
        bx, by, bw, bh = e.box  # the warped map covers the face box
        assert x <= bx + bw / 2 <= x + w and y <= by + bh / 2 <= y + h
        assert set(e.regions) == set(REGIONS)
        d = e.to_dict()
        json.dumps(d)
        assert {"box", "label", "probs", "image_box", "regions"} <= set(d)


def test_explain_matches_analyze_image(photos: Path) -> None:
    ref = emolens.analyze_image(photos / PORTRAIT).faces[0]
    e = emolens.explain(photos / PORTRAIT)[0]
    assert e.label == ref.label and e.box == ref.box
    assert e.probs == pytest.approx(ref.probs, abs=1e-4)


def test_occlusion_map_ranks_patches(photos: Path, model: ExpressionModel) -> None:
    """Covering the hottest spot of the map hurts the predicted class more than covering the coldest."""
    crops = np.stack([e.crop for e in emolens.explain(photos / GROUP)])
    for crop in crops:
        heat = occlusion_map(model, crop)
        assert heat.shape == crop.shape and heat.dtype == np.float32
        covered = []
        for flat in (int(heat.argmax()), int(heat.argmin())):
            y, x = np.unravel_index(flat, heat.shape)
            c = crop.copy()
            c[max(0, y - 4): y + 4, max(0, x - 4): x + 4] = 128
            covered.append(c)
        probs = model.predict(np.stack([crop, *covered]))
        cls = int(probs[0].argmax())
        assert probs[0, cls] - probs[1, cls] >= probs[0, cls] - probs[2, cls] - 1e-3


def test_region_deltas_change_probabilities(photos: Path, model: ExpressionModel) -> None:
    boxes = face_regions(model.spec)
    assert list(boxes) == list(REGIONS)
    for x0, y0, x1, y1 in boxes.values():
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
    assert boxes["eyes"][3] <= boxes["nose"][3] <= boxes["mouth"][3]  # top to bottom
    crop = emolens.explain(photos / PORTRAIT)[0].crop
    deltas = region_deltas(model, crop)
    assert max(abs(v) for r in deltas.values() for v in r.values()) > 0.01
    for r in deltas.values():
        assert list(r) == list(FER7) and sum(r.values()) == pytest.approx(0, abs=2e-3)


def test_cli_writes_pngs_and_json(photos: Path, tmp_path: Path) -> None:
    import cv2

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out, js = tmp_path / "out", tmp_path / "explain.json"
    r = run_cli("explain", str(photos / GROUP), str(bad), "--out", str(out), "--json", str(js))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "broken.jpg" in r.stderr
    data = json.loads(js.read_text())
    assert [Path(d["path"]).name for d in data] == [GROUP, "broken.jpg"]
    good, broken = data
    assert broken["error"] and broken["faces"] == []
    assert good["error"] is None and len(good["faces"]) >= 5
    photo = cv2.imread(good["image"])
    assert photo.shape == cv2.imread(str(photos / GROUP)).shape
    for face in good["faces"]:
        assert set(face["regions"]) == set(REGIONS) and face["label"] in FER7
        png = cv2.imread(face["png"])
        assert png is not None and png.shape[0] > 48 and png.std() > 0


@pytest.mark.parametrize("args", [
    ["--out", "OUT", "--model", "nope"],
    ["--out", "OUT", "--patch", "4", "--stride", "8"],
    ["--out", "OUT", "--stride", "0"],
    [],  # --out missing
])
def test_cli_bad_options_exit_2(photos: Path, tmp_path: Path, args: list[str]) -> None:
    args = [a.replace("OUT", str(tmp_path / "o")) for a in args]
    r = run_cli("explain", str(photos / PORTRAIT), *args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr


def test_cli_no_images(tmp_path: Path) -> None:
    r = run_cli("explain", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no image or video files" in r.stderr


@pytest.fixture(scope="module")
def fer_faces(fer_csv: Path) -> np.ndarray:
    from emolens.datasets import load_fer2013

    return load_fer2013(fer_csv, "PrivateTest").images[:150]


def test_deletion_occlusion_beats_random(fer_faces: np.ndarray, model: ExpressionModel) -> None:
    """Removing (blur) the 20% most salient pixels of the occlusion map hurts the predicted class
    >= 2x more than removing random blobs of the same size (the full run: benchmarks/bench_explain.py)."""
    drops = deletion_test(model, fer_faces, 0.2, method="occlusion", operator="blur")
    ratio = float(drops["salient"].mean() / drops["random"].mean())
    assert ratio >= 2, {k: float(v.mean()) for k, v in drops.items()}


@pytest.fixture(scope="module")
def gradcam_default(fer_faces: np.ndarray, model: ExpressionModel) -> tuple[np.ndarray, np.ndarray]:
    return gradcam_maps(model, fer_faces)


def test_deletion_gradcam_floor(fer_faces: np.ndarray, model: ExpressionModel, gradcam_default: tuple) -> None:
    """Removing (blur) the top 20% of the Grad-CAM map hurts the predicted class >= 2x more than removing
    random blobs (the full run: benchmarks/bench_explain.py)."""
    drops = deletion_drops(model, fer_faces, *gradcam_default, fraction=0.2, operator="blur")
    assert float(drops["salient"].mean() / drops["random"].mean()) >= 2, {k: float(v.mean()) for k, v in drops.items()}


@pytest.mark.parametrize("method, faces", [("gradcam", 150), ("occlusion", 40)])
def test_deletion_floor_of_the_accurate_model(fer_faces: np.ndarray, method: str, faces: int) -> None:
    """The accurate model's maps pass the same 2x deletion floor (fewer faces for occlusion: it runs
    121 occluded copies of each face through three networks; the full run: benchmarks/bench_explain.py)."""
    drops = deletion_test(default_model("accurate"), fer_faces[:faces], 0.2, method=method, operator="blur")
    assert float(drops["salient"].mean() / drops["random"].mean()) >= 2, {k: float(v.mean()) for k, v in drops.items()}


def test_gradcam_ranks_pixels(fer_faces: np.ndarray, model: ExpressionModel, gradcam_default: tuple) -> None:
    """Grad-CAM still carries signal: removing its top 20% hurts more than removing its bottom 20%."""
    maps, probs = gradcam_default
    top = deletion_drops(model, fer_faces, maps, probs, 0.2, "blur")["salient"].mean()
    bottom = deletion_drops(model, fer_faces, -maps, probs, 0.2, "blur")["salient"].mean()
    assert top > 2 * bottom, (top, bottom)


@pytest.mark.parametrize("name", ["default", "accurate"])
def test_gradcam_and_activations_on_photos(photos: Path, name: str) -> None:
    net = default_model(name)
    found = emolens.explain(photos / GROUP, model=net, method="both")
    assert len(found) >= 5
    for e in found:
        assert list(e.heatmaps) == ["occlusion", "gradcam"] and e.heatmap is e.heatmaps["occlusion"]
        cam = e.heatmaps["gradcam"]
        assert cam.shape == (48, 48) and cam.dtype == np.float32 and float(cam[2:46, 2:46].std()) > 0
        x, y, w, h = e.image_box
        assert e.image_heatmaps["gradcam"].shape == (h, w)
        sizes = [a.mean.shape for a in e.activations]
        members = 1 if name == "default" else 3
        assert sizes == [(44, 44), (22, 22), (11, 11), (5, 5)] * members
        for a in e.activations:
            assert len(a.channels) == len(a.maps) == 7 and float(a.mean.std()) > 0
            assert a.maps[0].mean() >= a.maps[-1].mean()  # ordered by mean activation
        json.dumps(e.to_dict())


def test_gradcam_follows_a_mirror(fer_faces: np.ndarray) -> None:
    """The accurate model averages each face with its mirror image, so it is mirror-symmetric: the
    Grad-CAM of a mirrored face must be the mirrored map (checks the mirrored views are flipped back)."""
    net = default_model("accurate")
    faces = fer_faces[:6]
    maps, probs = gradcam_maps(net, faces)
    mirrored, probs_m = gradcam_maps(net, faces[:, :, ::-1])
    assert np.allclose(probs, probs_m, atol=1e-4)
    assert np.allclose(mirrored, maps[:, :, ::-1], atol=1e-3 * float(np.abs(maps).max()))


def test_exported_gradient_matches_finite_differences(tmp_path: Path) -> None:
    """The exported d logit / d pooled features of the accurate model's first network equals the
    change of its logits for a small step of the pooled features (head cut out of the main graph)."""
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx.utils import extract_model

    from emolens.explanations import _run_explain, explain_block
    from emolens.expression import available_models

    path = available_models()["accurate"]
    nodes = onnx.load(str(path)).graph.node
    gap = next(n for n in nodes if n.op_type == "GlobalAveragePool")  # network 1, un-mirrored view
    flat = next(n for n in nodes if n.op_type == "Flatten" and n.input[0] == gap.output[0]).output[0]
    logits = [n for n in nodes if n.op_type == "Gemm"][1].output[0]
    extract_model(str(path), str(tmp_path / "head.onnx"), [flat], [logits])
    extract_model(str(path), str(tmp_path / "body.onnx"), ["faces"], [flat])
    head, body = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"])
                  for f in ("head.onnx", "body.onnx"))
    net = ExpressionModel("accurate")
    faces = np.random.default_rng(0).integers(0, 255, (3, 48, 48), np.uint8)
    feats = body.run(None, {"faces": faces[:, None, 2:46, 2:46].astype(np.float32)})[0]
    grad = _run_explain(net, faces, [explain_block(net)["branches"][0]["grad"]])[0]  # (3, classes, features)
    step = np.random.default_rng(1).normal(0, 1e-4, feats.shape).astype(np.float32)
    change = head.run(None, {flat: feats + step})[0] - head.run(None, {flat: feats})[0]
    predicted = np.einsum("ncf,nf->nc", grad, step)
    assert np.allclose(change, predicted, atol=0.03 * float(np.abs(predicted).max()))  # ReLU kinks aside


def test_exported_stage_gradient_matches_finite_differences(tmp_path: Path) -> None:
    """The exported d logit / d stage-2 activations (the Grad-CAM layer, taken back through stages 3 and 4
    inside the graph) of the accurate model's first network equals the change of its logits for a small
    step of those activations (the rest of the network cut out of the main graph)."""
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx.utils import extract_model

    from emolens.explanations import _run_explain, explain_block
    from emolens.expression import available_models

    path = available_models()["accurate"]
    nodes = onnx.load(str(path)).graph.node
    producer = {o: n for n in nodes for o in n.output}
    name, pools = next(n for n in nodes if n.op_type == "GlobalAveragePool").input[0], []
    while name in producer:  # network 1, un-mirrored view: back from its pooling to the input
        pools += [producer[name].input[0]] if producer[name].op_type == "MaxPool" else []
        name = producer[name].input[0]
    branch = explain_block(ExpressionModel("accurate"))["branches"][0]
    stage = pools[::-1][branch["cam_stage"] - 1]
    logits = [n for n in nodes if n.op_type == "Gemm"][1].output[0]
    extract_model(str(path), str(tmp_path / "tail.onnx"), [stage], [logits])
    tail = ort.InferenceSession(str(tmp_path / "tail.onnx"), providers=["CPUExecutionProvider"])
    faces = np.random.default_rng(0).integers(0, 255, (3, 48, 48), np.uint8)
    acts, grad = _run_explain(ExpressionModel("accurate"), faces,
                              [branch["stages"][branch["cam_stage"] - 1], branch["cam_grad"]])
    assert grad.shape == (3, 7, *acts.shape[1:])
    # steps on active units only: a max-pool window of zeros passes the gradient to all four (harmless for
    # Grad-CAM, which multiplies the gradient by these zero activations)
    step = np.random.default_rng(1).normal(0, 1e-3, acts.shape).astype(np.float32) * (acts > 0)
    change = tail.run(None, {stage: acts + step})[0] - tail.run(None, {stage: acts})[0]
    predicted = np.einsum("ncfhw,nfhw->nc", grad, step)
    assert np.allclose(change, predicted, atol=0.1 * float(np.abs(predicted).max()))  # ReLU/max-pool kinks aside


def test_explain_outputs_leave_the_normal_path_alone() -> None:
    """The Grad-CAM/activation outputs are switched off by default and empty; probabilities equal
    those of the explain pass."""
    net = default_model("default")
    outputs = [o.name for o in net.session.get_outputs()]
    from emolens.explanations import explain_block

    branches = explain_block(net)["branches"]  # the face and its mirror
    assert [b["flip"] for b in branches] == [False, True]
    assert outputs[0] == "probs" and len(outputs) == 1 + 6 * len(branches)
    assert [i.name for i in net.session.get_inputs()] == ["faces"]
    x = np.random.default_rng(1).integers(0, 255, (4, 1, 44, 44)).astype(np.float32)
    off = net.session.run(outputs, {"faces": x})
    assert all(o.size == 0 for o in off[1:])
    on = net.session.run(outputs, {"faces": x, "explain": np.array(True)})
    assert np.array_equal(off[0], on[0]) and on[-2].shape == (4, 7, 512) and on[-1].shape == (4, 7, 128, 22, 22)


def test_activation_maps_and_saliency_errors(fer_faces: np.ndarray, model: ExpressionModel) -> None:
    acts = activation_maps(model, fer_faces[:2], top=3)
    assert len(acts) == 2 and [a.name for a in acts[0]] == ["stage1", "stage2", "stage3", "stage4"]
    assert all(len(a.channels) == 3 for a in acts[0])
    with pytest.raises(ValueError, match="unknown heat-map method"):
        saliency_maps(model, fer_faces[:1], "lime")
    with pytest.raises(ValueError, match="unknown heat-map method"):
        emolens.explain(np.zeros((64, 64, 3), np.uint8), method="lime")


def test_region_evidence(fer_faces: np.ndarray, fer_csv: Path, model: ExpressionModel) -> None:
    from emolens.datasets import load_fer2013

    labels = load_fer2013(fer_csv, "PrivateTest").labels[: len(fer_faces)]
    ev = region_evidence(model, fer_faces, labels)
    assert ev["classes"] == list(FER7) and ev["regions"] == list(REGIONS)
    assert sum(ev["count"].values()) == len(fer_faces)
    assert max(abs(v) for d in ev["drop"].values() for v in d.values()) > 0.02
    assert ev["drop"]["happy"]["mouth"] > ev["drop"]["happy"]["nose"]  # masking the smile hurts "happy"


def test_evaluate_regions_cli(fer_csv: Path, tmp_path: Path) -> None:
    """``evaluate face --regions`` on a small labelled folder: table, chart and JSON."""
    import cv2

    from emolens.datasets import load_fer2013

    test = load_fer2013(fer_csv, "PrivateTest")
    for c, name in enumerate(FER7):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in np.flatnonzero(test.labels == c)[:6]:
            cv2.imwrite(str(tmp_path / "data" / name / f"{i}.png"), test.images[i])
    js, png = tmp_path / "r.json", tmp_path / "regions.png"
    r = run_cli("evaluate", "face", "--data", str(tmp_path / "data"), "--regions", "--json", str(js),
                "--regions-png", str(png))
    assert r.returncode == 0, r.stderr
    assert "main region" in r.stdout and "| happy | 6 |" in r.stdout
    data = json.loads(js.read_text())
    assert set(data["regions"]["drop"]) == set(FER7)
    assert cv2.imread(str(png)).shape[0] > 100
    r = run_cli("evaluate", "face", "--data", str(tmp_path / "data"), "--card")
    assert r.returncode == 2 and "--card needs --regions" in r.stderr


@pytest.mark.parametrize("name", ["default", "accurate"])
def test_model_cards_report_regions_and_faithfulness(name: str) -> None:
    from emolens.cards import sections
    from emolens.expression import available_models

    md = available_models()[name].with_suffix(".md").read_text()
    found = sections(md)
    assert "regions" in found and f"face_{name}.regions.png" in found["regions"]
    assert (available_models()[name].parent / f"face_{name}.regions.png").is_file()
    assert "faithfulness" in found and "gradcam" in found["faithfulness"]


def test_card_sections_replace_in_place() -> None:
    from emolens.cards import sections, set_section

    md = "# card\n\n## Limits\n\ntext\n"
    once = set_section(md, "regions", "table 1")
    assert once.index("table 1") < once.index("## Limits")
    twice = set_section(once, "regions", "table 2")
    assert "table 1" not in twice and sections(twice) == {"regions": "table 2"}


def test_cli_video_every_and_bad_inputs(photos: Path, media: Path, tmp_path: Path) -> None:
    """A short video, every 30th frame; every file of bad/ fails cleanly and the rest is still written."""
    import cv2

    clip = media / "video" / "face_clip_h264.mov"
    bad = sorted((media / "bad").iterdir())
    if not clip.is_file() or not bad:
        pytest.skip(f"needs {clip} and {media / 'bad'}")
    out, js = tmp_path / "out", tmp_path / "e.json"
    r = run_cli("explain", str(clip), *map(str, bad), str(photos / PORTRAIT), "--out", str(out), "--json", str(js),
                "--every", "30", "--method", "gradcam")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    data = json.loads(js.read_text())
    assert [Path(d["path"]).name for d in data] == [clip.name, *(b.name for b in bad), PORTRAIT]
    video, photo = data[0], data[-1]
    assert video["error"] is None and [f["index"] for f in video["frames"]] == [0, 30, 60]
    for frame in video["frames"]:
        assert len(frame["faces"]) == 1 and Path(frame["images"]["gradcam"]).is_file()
        assert cv2.imread(frame["faces"][0]["activations_png"]) is not None
    assert all(d["error"] and b.name in d["error"] for d, b in zip(data[1:-1], bad))
    assert photo["error"] is None and len(photo["faces"]) == 1
    assert (out / "face_clip_h264.regions.csv").read_text().count("\n") == 1 + 3 * 3 * 7
    assert not any(b.stem in p.name for p in out.iterdir() for b in bad)  # a bad input leaves no files
