"""Readers for the datasets emolens trains and evaluates on.

* Kaggle FER2013 csv (plain, ``.gz`` or ``.xz``) with its ``Usage`` split,
* FER+ crowd votes (``fer2013new.csv``): majority labels and soft vote distributions,
* an image-folder layout ``root/<class>/*.jpg|png`` for users' own data.

Face images come back as ``uint8`` arrays of shape ``(N, 48, 48)``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emolens.labels import FER7, FERPLUS8, FERPLUS_COLUMNS, normalize_label

FER_SPLITS = ("Training", "PublicTest", "PrivateTest")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class FaceDataset:
    """A set of 48x48 grayscale face crops with labels.

    ``images`` is ``uint8 (N, 48, 48)``; ``labels`` is ``int64 (N,)`` indexing ``classes``;
    ``soft`` (optional) is ``float32 (N, len(classes))`` of soft label distributions.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...] = FER7
    soft: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, mask: np.ndarray) -> FaceDataset:
        """Rows where ``mask`` is true (or the given indices)."""
        soft = None if self.soft is None else self.soft[mask]
        return FaceDataset(self.images[mask], self.labels[mask], self.classes, soft)

    def counts(self) -> dict[str, int]:
        """Number of rows per class name."""
        binc = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, binc)}


def _cache_dir() -> Path:
    root = os.environ.get("EMOLENS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "emolens"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def load_fer2013_arrays(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a FER2013 csv into ``(images uint8 (N,48,48), labels int64 (N,), usage str (N,))``.

    Accepts the plain csv, ``.gz`` or ``.xz``. Parsing 35,887 rows takes ~20 s, so the
    arrays are cached (keyed by path, size and mtime) under ``$EMOLENS_CACHE`` or
    ``~/.cache/emolens``.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FER2013 csv not found: {path}")
    cache = _cache_dir() / f"fer2013-{_file_key(path)}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return z["images"], z["labels"], z["usage"]
    frame = pd.read_csv(path, dtype={"emotion": np.int64, "pixels": str, "Usage": str})
    missing = {"emotion", "pixels", "Usage"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} is not a FER2013 csv: missing columns {sorted(missing)}")
    images = np.empty((len(frame), 48, 48), dtype=np.uint8)
    for i, pixels in enumerate(frame["pixels"].to_numpy()):
        row = np.array(pixels.split(), dtype=np.uint8)
        if row.size != 48 * 48:
            raise ValueError(f"{path}: row {i} has {row.size} pixels, expected 2304")
        images[i] = row.reshape(48, 48)
    labels = frame["emotion"].to_numpy(dtype=np.int64)
    usage = frame["Usage"].to_numpy(dtype=str)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, labels=labels, usage=usage)
    tmp.replace(cache)
    return images, labels, usage


def load_ferplus_votes(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read FER+ votes (``fer2013new.csv``).

    Returns ``(votes float32 (N, 8), usage str (N,))`` with the vote columns mapped to
    :data:`~emolens.labels.FERPLUS8` order; the ``unknown`` and ``NF`` columns are dropped.
    Rows keep the csv order, which is the order of ``fer2013.csv``.
    """
    import pandas as pd

    frame = pd.read_csv(path)
    votes = np.zeros((len(frame), len(FERPLUS8)), dtype=np.float32)
    for column, name in FERPLUS_COLUMNS.items():
        if column not in frame.columns:
            raise ValueError(f"{path} is not a FER+ votes csv: missing column {column!r}")
        votes[:, FERPLUS8.index(name)] = frame[column].to_numpy(dtype=np.float32)
    return votes, frame["Usage"].to_numpy(dtype=str)


def ferplus_targets(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Majority labels, soft distributions and a validity mask from FER+ votes.

    A row is valid when it has at least one vote left after dropping ``unknown``/``NF``.
    Ties in the majority go to the first class in :data:`FERPLUS8` order.
    """
    total = votes.sum(axis=1)
    valid = total > 0
    soft = np.zeros_like(votes)
    soft[valid] = votes[valid] / total[valid, None]
    majority = votes.argmax(axis=1).astype(np.int64)
    return majority, soft, valid


def load_fer2013(
    path: str | os.PathLike,
    split: str | None = None,
    ferplus: str | os.PathLike | None = None,
) -> FaceDataset:
    """Load FER2013 (optionally one ``Usage`` split) as a 7-class :class:`FaceDataset`.

    With ``ferplus``, ``soft`` holds the FER+ vote distribution folded onto the 7 FER2013
    classes (``contempt`` votes are dropped; rows with no usable vote get their one-hot
    FER2013 label), aligned by row order.
    """
    images, labels, usage = load_fer2013_arrays(path)
    soft = None
    if ferplus is not None:
        votes, plus_usage = load_ferplus_votes(ferplus)
        if len(votes) != len(labels) or not np.array_equal(plus_usage, usage):
            raise ValueError("FER+ votes do not line up with the FER2013 csv (row count or Usage differ)")
        seven = votes[:, : len(FER7)]
        total = seven.sum(axis=1, keepdims=True)
        onehot = np.eye(len(FER7), dtype=np.float32)[labels]
        soft = np.where(total > 0, seven / np.maximum(total, 1), onehot).astype(np.float32)
    data = FaceDataset(images, labels, FER7, soft)
    if split is None:
        return data
    if split not in FER_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(FER_SPLITS)}")
    return data.subset(usage == split)


def load_image_folder(root: str | os.PathLike, size: int = 48) -> FaceDataset:
    """Load ``root/<class>/*.jpg|png`` as grayscale ``size`` x ``size`` face crops.

    Folder names are mapped to emolens labels (``happiness`` -> ``happy`` ...); classes
    keep FER2013 order so a model trained on them matches the shipped one.
    """
    import cv2

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    images, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        name = normalize_label(folder.name)
        if name not in FER7:
            raise ValueError(f"class folder {folder.name!r} is not one of {FER7}")
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            img = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise ValueError(f"cannot read image {file}")
            images.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
            labels.append(FER7.index(name))
    if not images:
        raise ValueError(f"no images found under {root}/<class>/")
    return FaceDataset(np.stack(images), np.asarray(labels, dtype=np.int64), FER7)


def load_face_data(path: str | os.PathLike, ferplus: str | os.PathLike | None = None) -> dict[str, FaceDataset]:
    """Load any supported face dataset as ``{"Training", "PublicTest", "PrivateTest"}`` splits.

    A FER2013 csv keeps its own splits. An image folder with ``train/``, ``val/`` and
    ``test/`` subfolders maps to those; a flat class folder becomes a seeded 80/10/10 split.
    """
    path = Path(path)
    if path.is_file():
        return {split: load_fer2013(path, split, ferplus) for split in FER_SPLITS}
    sub = {name.lower(): p for p in path.iterdir() if p.is_dir() for name in [p.name]}
    if "train" in sub:
        val = sub.get("val") or sub.get("valid") or sub.get("validation") or sub.get("test")
        test = sub.get("test") or val
        if val is None:
            raise ValueError(f"{path} has train/ but no val/ or test/ folder")
        return {
            "Training": load_image_folder(sub["train"]),
            "PublicTest": load_image_folder(val),
            "PrivateTest": load_image_folder(test),
        }
    data = load_image_folder(path)
    order = np.random.default_rng(0).permutation(len(data))
    n_val = max(1, len(data) // 10)
    return {
        "Training": data.subset(order[2 * n_val:]),
        "PublicTest": data.subset(order[:n_val]),
        "PrivateTest": data.subset(order[n_val: 2 * n_val]),
    }
