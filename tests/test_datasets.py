"""Dataset readers on the real FER2013 / FER+ files and on a small image folder."""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import numpy as np
import pytest

from emolens.datasets import (
    ferplus_targets,
    load_face_data,
    load_fer2013,
    load_ferplus_votes,
    load_image_folder,
)


def test_fer2013_split_counts(fer_csv: Path) -> None:
    splits = load_face_data(fer_csv)
    assert {k: len(v) for k, v in splits.items()} == {"Training": 28709, "PublicTest": 3589, "PrivateTest": 3589}
    assert splits["Training"].counts() == {
        "angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "sad": 4830, "surprise": 3171, "neutral": 4965,
    }
    assert splits["PrivateTest"].counts()["disgust"] == 55
    first = load_fer2013(fer_csv).images[0]
    assert first.shape == (48, 48) and first.dtype == np.uint8
    assert list(first[0, :5]) == [70, 80, 82, 72, 58]


def test_ferplus_votes(ferplus_csv: Path, fer_csv: Path) -> None:
    votes, usage = load_ferplus_votes(ferplus_csv)
    assert votes.shape == (35887, 8)
    assert (usage == "PrivateTest").sum() == 3589
    majority, soft, valid = ferplus_targets(votes)
    assert np.allclose(soft[valid].sum(1), 1)
    assert not valid.all()  # some rows only have unknown/NF votes
    data = load_fer2013(fer_csv, "Training", ferplus=ferplus_csv)
    assert data.soft is not None and data.soft.shape == (28709, 7)
    assert np.allclose(data.soft.sum(1), 1, atol=1e-5)


def test_plain_and_gzip_csv(tmp_path: Path) -> None:
    rows = ["emotion,pixels,Usage"]
    rng = np.random.default_rng(0)
    for i, usage in enumerate(["Training", "Training", "PublicTest", "PrivateTest"]):
        rows.append(f"{i % 7},{' '.join(map(str, rng.integers(0, 256, 2304)))},{usage}")
    text = "\n".join(rows) + "\n"
    plain = tmp_path / "mini.csv"
    plain.write_text(text)
    gz = tmp_path / "mini.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    for path in (plain, gz):
        splits = load_face_data(path)
        assert len(splits["Training"]) == 2 and len(splits["PrivateTest"]) == 1


def test_bad_csv_is_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a FER2013 csv"):
        load_fer2013(bad)


def test_image_folder(tmp_path: Path) -> None:
    for name in ("Happy", "sadness"):
        (tmp_path / name).mkdir()
        for i in range(3):
            cv2.imwrite(str(tmp_path / name / f"{i}.png"), np.full((64, 64), 40 * i, np.uint8))
    data = load_image_folder(tmp_path)
    assert data.images.shape == (6, 48, 48)
    assert data.counts()["happy"] == 3 and data.counts()["sad"] == 3
    assert list(data.framing) == ["no face"] * 6 and data.paths[0].endswith("0.png")
    assert data.subset(np.array([1, 4])).paths.tolist() == [data.paths[1], data.paths[4]]
    # an emotion the classes lack is skipped and counted, never relabelled
    (tmp_path / "contempt").mkdir()
    cv2.imwrite(str(tmp_path / "contempt" / "c.png"), np.zeros((64, 64), np.uint8))
    data = load_image_folder(tmp_path, framing="crop")
    assert len(data) == 6 and data.skipped == {"contempt": 1} and set(data.framing) == {"crop"}
    (tmp_path / "bored").mkdir()
    with pytest.raises(ValueError, match="'bored' is not an emotion emolens knows"):
        load_image_folder(tmp_path)


def test_ferplus_relabel_uses_the_majority_vote(fer_csv: Path, ferplus_csv: Path) -> None:
    """``relabel``: FER+ majority labels; contempt majorities and faces without a usable vote are
    left out and counted, never mapped onto another class."""
    plain = load_fer2013(fer_csv, "PrivateTest")
    plus = load_fer2013(fer_csv, "PrivateTest", ferplus_csv, relabel=True)
    votes, usage = load_ferplus_votes(ferplus_csv)
    votes = votes[usage == "PrivateTest"]
    majority, _, valid = ferplus_targets(votes)
    keep = valid & (majority != 7)
    assert plus.skipped == {"contempt": int((valid & (majority == 7)).sum()), "no usable vote": int((~valid).sum())}
    assert len(plus) == keep.sum() == len(plain) - sum(plus.skipped.values())
    assert np.array_equal(plus.labels, majority[keep]) and np.array_equal(plus.images, plain.images[keep])
    assert (plus.labels != plain.labels[keep]).mean() > 0.1  # the two label sets really differ
    with pytest.raises(ValueError, match="relabel needs"):
        load_fer2013(fer_csv, "PrivateTest", relabel=True)
