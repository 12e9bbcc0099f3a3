"""What a new user meets on the command line and in the API: outputs, usage errors, names, help, inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import emolens
from emolens.cli import app

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "astronaut.jpg"
COMMANDS = [["image"], ["video"], ["live"], ["audio"], ["serve"],
            ["train", "face"], ["evaluate", "face"], ["train", "speech"], ["evaluate", "speech"]]


def invoke(*args: str, columns: int = 200):  # noqa: ANN201
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(app, list(args))


# -- 1. outputs: no overwriting, --bars/--no-bars, every file named -----------------------------


def test_unique_stem_is_shared_and_never_repeats() -> None:
    from emolens import cli_video
    from emolens.outputs import unique_stem

    used: set[str] = set()
    names = [unique_stem("x", ".png", used), unique_stem("x", ".png", used), unique_stem("x", ".png", used)]
    assert len(set(names)) == 3 and names[0] == "x"
    video_used: set[str] = set()
    assert cli_video._unique_stem("a/clip.mp4", video_used) == "clip"
    assert cli_video._unique_stem("b/clip.mkv", video_used) == "clip.mkv"


def test_image_same_names_in_two_folders_keep_both_annotated_copies(tmp_path: Path) -> None:
    import cv2

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    shutil.copy(SAMPLE, tmp_path / "a" / "x.jpg")
    cv2.imwrite(str(tmp_path / "b" / "x.jpg"), cv2.flip(cv2.imread(str(SAMPLE)), 1))
    out, report = tmp_path / "out", tmp_path / "r.json"
    result = invoke("image", str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.jpg"),
                    "--save-annotated", str(out), "--json", str(report), "--no-bars", "-q")
    assert result.exit_code == 0, result.output
    copies = sorted(out.glob("*.annotated.jpg"))
    assert len(copies) == 2, copies
    for copy in copies:  # every written file is named on the terminal
        assert str(copy) in result.output
    assert f"wrote {report}" in result.output
    assert len(json.loads(report.read_text())) == 2


def test_image_bars_option_reaches_the_drawing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from emolens import outputs

    seen: list[bool] = []
    original = outputs.annotate_image

    def spy(image: np.ndarray, faces: list, bars: bool = True) -> np.ndarray:
        seen.append(bars)
        return original(image, faces, bars=bars)

    monkeypatch.setattr(outputs, "annotate_image", spy)
    for flag in ("--bars", "--no-bars"):
        result = invoke("image", str(SAMPLE), "--save-annotated", str(tmp_path / flag), flag, "-q")
        assert result.exit_code == 0, result.output
    assert seen == [True, False]


def test_video_no_bars_window_alias_and_outputs_listed(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from emolens import outputs

    seen: set[bool] = set()
    original = outputs.draw_tracked

    def spy(image: np.ndarray, faces: list, bars: bool = True) -> np.ndarray:
        seen.add(bars)
        return original(image, faces, bars)

    monkeypatch.setattr(outputs, "draw_tracked", spy)
    clip = media / "video" / "one_face_640x360.mp4"
    result = invoke("video", str(clip), "--out", str(tmp_path), "--max-frames", "3", "--modality", "face",
                    "--no-progress", "--no-bars", "--window", "4")
    assert result.exit_code == 0, result.output
    assert seen == {False}
    for name in ("frames.csv", "summary.json", "annotated.mp4"):
        assert str(tmp_path / f"one_face_640x360.{name}") in result.output, result.output
    summary = json.loads((tmp_path / "one_face_640x360.summary.json").read_text())
    assert summary["options"]["window"] == 4


# -- 2. conflicting and out-of-range options are usage errors ----------------------------------


@pytest.mark.parametrize("args", [
    ["video", "x.mp4", "--out", "o", "--every", "2", "--fps", "5"],
    ["video", "x.mp4", "--out", "o", "--min-score", "2"],
    ["video", "x.mp4", "--out", "o", "--alpha", "5"],
    ["video", "x.mp4", "--out", "o", "--fps", "0"],
    ["live", "--every", "2", "--fps", "5"],
    ["live", "--alpha", "-0.1"],
    ["live", "--min-score", "1.5"],
    ["live", "--port", "70000"],
    ["image", "x.jpg", "--min-score", "2"],
    ["audio", "x.wav", "--threshold", "2"],
    ["audio", "x.wav", "--threads", "-1"],
    ["serve", "--min-score", "2"],
])
def test_bad_options_are_usage_errors(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (ValueError, TypeError))
    assert "--" in result.output  # names the option


# -- 3. the same names in video and live --------------------------------------------------------


def test_fps_alone_or_with_default_every_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    import emolens.live

    monkeypatch.setattr(emolens.live, "run_live", lambda source, **kwargs: {"frames": 0, "fps": None,
                                                                              "stopped": "end", "preview": "window"})
    assert invoke("live", "--fps", "5").exit_code == 0
    assert invoke("live", "--every", "2").exit_code == 0


def test_video_and_live_share_option_names() -> None:
    video = invoke("video", "--help").output
    live = invoke("live", "--help").output
    for option in ("--smooth-window", "--classify-every", "--bars", "--alpha", "--min-score"):
        assert option in video and option in live, option
    assert "--window " not in video  # the old name still works, hidden
    assert not any(line.lstrip().startswith("--modality") for line in live.splitlines())
    assert "does not analyse sound" in live


def test_live_passes_classify_every_and_smooth_window(monkeypatch: pytest.MonkeyPatch) -> None:
    import emolens.live

    got: dict = {}

    def fake_run_live(source: str, **kwargs: object) -> dict:
        got.update(kwargs, options=kwargs["analyzer"].options)  # type: ignore[attr-defined]
        return {"frames": 0, "fps": None, "stopped": "end of source", "preview": "window"}

    monkeypatch.setattr(emolens.live, "run_live", fake_run_live)
    result = invoke("live", "--classify-every", "3", "--smooth-window", "7", "--no-bars")
    assert result.exit_code == 0, result.output
    assert got["options"].classify_every == 3 and got["options"].window == 7 and got["bars"] is False


# -- 4. help at 80 columns ---------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_fits_80_columns(command: list[str]) -> None:
    result = invoke(*command, "--help", columns=80)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "…" not in result.output
    too_long = [line for line in result.output.splitlines() if len(line) > 80]
    assert not too_long, too_long


# -- 5. the Python API checks its inputs ---------------------------------------------------------


@pytest.mark.parametrize(("value", "error", "words"), [
    (None, TypeError, "path"),
    (123, TypeError, "path"),
    ([[0, 1], [2, 3]], TypeError, "numpy array"),
    (np.zeros(10, np.uint8), ValueError, r"shape \(10,\)"),
    (np.zeros((1, 32, 32, 3), np.float32), ValueError, "shape"),
    (np.zeros((32, 32, 5), np.uint8), ValueError, "shape"),
    (np.zeros((0, 32, 3), np.uint8), ValueError, "empty"),
    (np.full((32, 32), np.nan, np.float32), ValueError, "NaN"),
    (np.zeros((32, 32), object), TypeError, "dtype"),
])
def test_analyze_image_rejects_bad_input_clearly(value: object, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        emolens.analyze_image(value)  # type: ignore[arg-type]


def test_analyze_image_still_takes_float_bgra() -> None:
    import cv2

    bgra = cv2.cvtColor(cv2.imread(str(SAMPLE)), cv2.COLOR_BGR2BGRA).astype(np.float32) / 255
    assert len(emolens.analyze_image(bgra).faces) == 1


def test_face_analyzer_checks_its_settings() -> None:
    from emolens.api import FaceAnalyzer
    from emolens.faces import YuNetDetector
    from emolens.video import VideoOptions

    with pytest.raises(ValueError, match="min_score"):
        FaceAnalyzer(detector=YuNetDetector(), min_score=2)
    with pytest.raises(ValueError, match="min_score"):
        FaceAnalyzer(min_score=-0.5)
    with pytest.raises(ValueError, match="max_pixels"):
        FaceAnalyzer(max_pixels=0)
    with pytest.raises(TypeError, match="detect"):
        FaceAnalyzer(detector=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0..1"):
        VideoOptions(alpha=5)
