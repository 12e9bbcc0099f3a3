"""Annotations that stay legible in groups, and a timeline chart per person."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emolens.annotate import COLORS, FaceMark, draw_faces, layout, text_color
from emolens.labels import FER7


def _overlap(a: tuple, b: tuple) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _probs(top: str) -> dict[str, float]:
    return {n: (0.7 if n == top else 0.05) for n in FER7}


def _check(shape: tuple, marks: list[FaceMark]) -> list:
    places = layout(shape, marks)
    h, w = shape[:2]
    for i, p in enumerate(places):
        assert 0 <= p.tag[0] and 0 <= p.tag[1] and p.tag[2] <= w and p.tag[3] <= h
        if p.panel is None:
            continue
        assert 0 <= p.panel[0] and 0 <= p.panel[1] and p.panel[2] <= w and p.panel[3] <= h
        for j, q in enumerate(places):
            assert _overlap(p.panel, q.box) == 0  # a panel never covers a face (its own included)
            assert _overlap(p.panel, q.tag) == 0
            if j != i and q.panel is not None:
                assert _overlap(p.panel, q.panel) == 0
    return places


def test_panels_never_cover_faces_or_each_other() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        marks = []
        for _ in range(rng.integers(1, 9)):
            x, y, s = rng.integers(0, 560), rng.integers(0, 400), rng.integers(30, 140)
            marks.append(FaceMark([x, y, s, s], "happy", _probs("happy")))
        _check((480, 640, 3), marks)


def test_crowded_faces_fall_back_to_compact_labels() -> None:
    marks = [FaceMark([10 + 60 * i, 10 + 60 * j, 55, 55], "sad", _probs("sad")) for i in range(5) for j in range(4)]
    places = _check((260, 320, 3), marks)
    assert all(p.panel is None for p in places)
    assert layout((2000, 2000, 3), marks[:1])[0].panel is not None  # room: the panel is drawn


def test_text_contrasts_with_its_backing() -> None:
    assert text_color(COLORS["happy"]) == (0, 0, 0)  # yellow backing: black text
    assert text_color(COLORS["angry"]) == (255, 255, 255)


def test_drawing_scales_with_the_image() -> None:
    small = layout((300, 400, 3), [FaceMark([100, 100, 80, 80], "happy", _probs("happy"))])[0]
    large = layout((3000, 4000, 3), [FaceMark([1000, 1000, 800, 800], "happy", _probs("happy"))])[0]
    assert (large.tag[3] - large.tag[1]) > 2 * (small.tag[3] - small.tag[1])
    image = draw_faces(np.full((300, 400, 3), 255, np.uint8), [FaceMark([100, 100, 80, 80], "happy", _probs("happy"))])
    assert (image != 255).any()


def test_group_photos_are_laid_out_without_overlaps(media: Path) -> None:
    from emolens.api import FaceAnalyzer
    from emolens.media import load_image

    analyzer = FaceAnalyzer()
    for name in ("group_selfie_7faces.jpg", "group_family_7faces.jpg", "group_friends_6faces.jpg"):
        image = load_image(media / "photos" / name)
        faces = analyzer.analyze_frame(image)
        assert len(faces) >= 5
        _check(image.shape, [FaceMark(f.face.box, f.label, f.probs) for f in faces])


def _frames(with_voice: bool) -> pd.DataFrame:
    rows = []
    for t in range(40):
        for track in (1, 2, 3):
            row = {"time_s": t / 10, "frame": t, "track_id": track, "label": "happy"}
            row |= {f"p_{n}": 1 / 7 for n in FER7}
            if with_voice:
                row |= {f"p_voice_{n}": (0.9 if n == "sad" else 0.01) if t > 10 else np.nan for n in FER7}
                row |= {f"p_fused_{n}": 1 / 7 for n in FER7}
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("with_voice", [False, True])
def test_timeline_has_one_chart_per_person_and_one_legend(with_voice: bool, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from emolens.outputs import plot_timeline, timeline_figure

    table = _frames(with_voice)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Tight layout not applied"
        fig = timeline_figure(table, "clip")
        fig.canvas.draw()
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(FER7)  # no p_voice_*/p_fused_* entries
    ylabels = [ax.get_ylabel() for ax in fig.axes]
    assert sum(label.startswith("person") for label in ylabels) == 3
    assert ylabels.count("voice") == (3 if with_voice else 0)
    renderer = fig.canvas.get_renderer()
    legend_box = fig.legends[0].get_window_extent(renderer)
    assert legend_box.x1 <= fig.bbox.x1 + 1  # the legend is not cut at the right edge
    plt.close(fig)
    csv = tmp_path / "f.csv"
    table.to_csv(csv, index=False)
    assert plot_timeline(csv, tmp_path / "t.png") and (tmp_path / "t.png").stat().st_size > 5000
