"""Readers for the datasets emolens trains and evaluates on.

* Kaggle FER2013 csv (plain, ``.gz`` or ``.xz``) with its ``Usage`` split,
* FER+ crowd votes (``fer2013new.csv``): majority labels and soft vote distributions,
* an image-folder layout ``root/<class>/*.jpg|png`` for users' own data.

Face images come back as ``uint8`` arrays of shape ``(N, 48, 48)``.

Speech corpora (labels on the :data:`~emolens.labels.RAVDESS8` vocabulary, one speaker id per
file, each corpus with its own label subset): RAVDESS (file names), EmoDB, URDU and TurEV-DB
(their ``manifest.csv``), a ``root/<label>/*.wav`` folder layout, and all of them at once
(:func:`load_speech_corpora`).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emolens.labels import FER7, FERPLUS8, FERPLUS_COLUMNS, RAVDESS8, normalize_label

FER_SPLITS = ("Training", "PublicTest", "PrivateTest")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class FaceDataset:
    """A set of 48x48 grayscale face crops with labels.

    ``images`` is ``uint8 (N, 48, 48)``; ``labels`` is ``int64 (N,)`` indexing ``classes``;
    ``soft`` (optional) is ``float32 (N, len(classes))`` of soft label distributions. Image
    folders also keep each crop's ``paths`` and ``framing`` (how the face was cut out:
    :data:`emolens.face_crops.HOW`), ``skipped``: images per class folder the classes lack, and
    ``unreadable``: the files that could not be decoded (left out).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...] = FER7
    soft: np.ndarray | None = None
    paths: np.ndarray | None = None
    framing: np.ndarray | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, mask: np.ndarray) -> FaceDataset:
        """Rows where ``mask`` is true (or the given indices)."""
        def pick(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[mask]

        return FaceDataset(self.images[mask], self.labels[mask], self.classes, pick(self.soft),
                           pick(self.paths), pick(self.framing), dict(self.skipped), list(self.unreadable))

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
    arrays of files above 1 MB are cached (keyed by path, size and mtime) under
    ``$EMOLENS_CACHE`` or ``~/.cache/emolens``; the cache keeps the :data:`CACHE_KEEP` most
    recently used files (about 83 MB each for the full FER2013) and removes older ones.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FER2013 csv not found: {path}")
    use_cache = path.stat().st_size > 1_000_000  # small files parse in moments: never cached
    cache = _cache_dir() / f"fer2013-{_file_key(path)}.npz" if use_cache else None
    if cache is not None and cache.is_file():
        os.utime(cache)  # most recently used
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
    if cache is not None:
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=images, labels=labels, usage=usage)
        tmp.replace(cache)
        prune_cache(cache.parent, "fer2013-*.npz")
    return images, labels, usage


#: How many files of each kind (parsed FER2013 csvs, speech feature sets) the cache keeps.
CACHE_KEEP = 2


def prune_cache(folder: Path, pattern: str, keep: int = CACHE_KEEP) -> None:
    """Remove all but the ``keep`` most recently used cache files matching ``pattern``."""
    files = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


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
    relabel: bool = False,
) -> FaceDataset:
    """Load FER2013 (optionally one ``Usage`` split) as a 7-class :class:`FaceDataset`.

    With ``ferplus``, ``soft`` holds the FER+ vote distribution folded onto the 7 FER2013
    classes (``contempt`` votes are dropped; rows with no usable vote get their one-hot
    FER2013 label), aligned by row order. ``relabel`` (with ``ferplus``): the labels become the
    FER+ majority vote (:func:`ferplus_targets`); faces whose majority is ``contempt`` or that
    have no usable vote are left out and counted in ``skipped``.
    """
    if split is not None and split not in FER_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(FER_SPLITS)}")
    if relabel and ferplus is None:
        raise ValueError("relabel needs the FER+ votes (ferplus)")
    images, labels, usage = load_fer2013_arrays(path)
    soft = None
    keep = np.ones(len(labels), bool) if split is None else usage == split
    skipped: dict[str, int] = {}
    if ferplus is not None:
        votes, plus_usage = load_ferplus_votes(ferplus)
        if len(votes) != len(labels) or not np.array_equal(plus_usage, usage):
            raise ValueError("FER+ votes do not line up with the FER2013 csv (row count or Usage differ)")
        seven = votes[:, : len(FER7)]
        total = seven.sum(axis=1, keepdims=True)
        onehot = np.eye(len(FER7), dtype=np.float32)[labels]
        soft = np.where(total > 0, seven / np.maximum(total, 1), onehot).astype(np.float32)
        if relabel:
            majority, _, valid = ferplus_targets(votes)
            contempt = valid & (majority == FERPLUS8.index("contempt"))
            skipped = {"contempt": int((keep & contempt).sum()), "no usable vote": int((keep & ~valid).sum())}
            labels = np.where(valid & ~contempt, majority, labels)
            keep &= valid & ~contempt
    data = FaceDataset(images, labels, FER7, soft)
    if split is None and not skipped:
        return data
    data = data.subset(keep)
    data.skipped = skipped
    return data


def image_folder_files(root: str | os.PathLike,
                       classes: tuple[str, ...] = FER7) -> tuple[list[tuple[Path, int]], dict[str, int]]:
    """The labelled images of ``root/<class>/*``: ``([(path, class index)], skipped)``.

    Folder names are mapped to emolens labels (``happiness`` -> ``happy`` ...). A folder of an
    emotion ``classes`` lacks (``contempt`` for the 7 FER2013 classes) is skipped and counted in
    ``skipped``, never relabelled; a folder name that is no emotion at all is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files: list[tuple[Path, int]] = []
    skipped: dict[str, int] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            name = normalize_label(folder.name)
        except ValueError:
            raise ValueError(f"class folder {folder.name!r} is not an emotion emolens knows "
                             f"(the model's classes: {', '.join(classes)})") from None
        images = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if name not in classes:
            skipped[folder.name] = len(images)
            continue
        files += [(f, classes.index(name)) for f in images]
    if not files:
        raise ValueError(f"no images found under {root}/<class>/ for the classes {', '.join(classes)}")
    return files, skipped


Cropper = Callable[[np.ndarray], tuple[np.ndarray, str]]


def load_image_folder(root: str | os.PathLike, size: int = 48, framing: str | Cropper = "auto",
                      progress: bool = False) -> FaceDataset:
    """Load ``root/<class>/*.jpg|png`` as grayscale ``size`` x ``size`` face crops.

    ``framing``: how each image becomes a face crop, ``auto``, ``detect`` or ``crop``
    (:mod:`emolens.face_crops`: full photos get their face found and aligned, face crops are
    resized), or a callable image -> ``(crop, how)`` such as a :class:`~emolens.face_crops.FaceCropper`
    for another model's template. Classes keep FER2013 order so a model trained on them matches the
    shipped one; folders of other emotions are skipped (:func:`image_folder_files`).
    ``progress``: a tqdm bar.
    """
    import cv2
    from tqdm import tqdm

    from emolens.face_crops import FaceCropper

    files, skipped = image_folder_files(root)
    cropper = FaceCropper(framing, size) if isinstance(framing, str) else framing
    images, labels, how, paths, unreadable = [], [], [], [], []
    for file, label in tqdm(files, unit="image", desc=Path(root).name[:30], disable=not progress, leave=False):
        img = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if img is None:  # skipped and named: one bad file must not cost the rest of a long run
            unreadable.append(str(file))
            continue
        crop, way = cropper(img)
        images.append(crop)
        labels.append(label)
        how.append(way)
        paths.append(str(file))
    if not images:
        raise ValueError(f"none of the {len(files)} images under {root} can be read")
    return FaceDataset(np.stack(images), np.asarray(labels, dtype=np.int64), FER7, paths=np.asarray(paths),
                       framing=np.asarray(how), skipped=skipped, unreadable=unreadable)


def load_face_data(path: str | os.PathLike, ferplus: str | os.PathLike | None = None,
                   framing: str | Cropper = "auto", progress: bool = False) -> dict[str, FaceDataset]:
    """Load any supported face dataset as ``{"Training", "PublicTest", "PrivateTest"}`` splits.

    A FER2013 csv keeps its own splits. An image folder with ``train/``, ``val/`` and
    ``test/`` subfolders maps to those; a flat class folder becomes a seeded 80/10/10 split.
    ``framing`` and ``progress``: as in :func:`load_image_folder` (image folders only).
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
            "Training": load_image_folder(sub["train"], framing=framing, progress=progress),
            "PublicTest": load_image_folder(val, framing=framing, progress=progress),
            "PrivateTest": load_image_folder(test, framing=framing, progress=progress),
        }
    data = load_image_folder(path, framing=framing, progress=progress)
    order = np.random.default_rng(0).permutation(len(data))
    n_val = max(1, len(data) // 10)
    return {
        "Training": data.subset(order[2 * n_val:]),
        "PublicTest": data.subset(order[:n_val]),
        "PrivateTest": data.subset(order[n_val: 2 * n_val]),
    }


# ----------------------------------------------------------------------------- speech datasets

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".flv", ".avi", ".mov", ".mpg", ".mpeg", ".m4v", ".ts", ".3gp"}

RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
CREMA_NAME = re.compile(r"^(\d{4})_[A-Z]{3}_([A-Z]{3})_[A-Z]{2}$")


@dataclass
class SpeechItem:
    """One labelled recording: ``label`` indexes :data:`~emolens.labels.RAVDESS8`."""

    path: str
    label: int
    speaker: str
    gender: str | None = None
    intensity: str | None = None
    corpus: str = ""


@dataclass
class SpeechDataset:
    """Labelled recordings with their speakers (for speaker-independent splits)."""

    items: list[SpeechItem]
    classes: tuple[str, ...] = RAVDESS8
    #: the label subset each corpus has (class names in ``classes`` order); a corpus missing
    #: here is taken to have every class
    corpus_classes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> np.ndarray:
        """``int64 (N,)`` class indices."""
        return np.asarray([it.label for it in self.items], dtype=np.int64)

    @property
    def speakers(self) -> np.ndarray:
        """Speaker id per item (``str``)."""
        return np.asarray([it.speaker for it in self.items])

    @property
    def paths(self) -> list[str]:
        """File paths."""
        return [it.path for it in self.items]

    def subset(self, idx: np.ndarray | list[int]) -> SpeechDataset:
        """Items at the given indices (or boolean mask)."""
        idx = np.flatnonzero(idx) if np.asarray(idx).dtype == bool else np.asarray(idx, dtype=int)
        return SpeechDataset([self.items[i] for i in idx], self.classes, dict(self.corpus_classes))

    def counts(self) -> dict[str, int]:
        """Number of items per class name."""
        binc = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, binc, strict=True)}

    @property
    def corpora(self) -> np.ndarray:
        """Corpus name per item (``str``)."""
        return np.asarray([it.corpus for it in self.items])

    def class_mask(self) -> np.ndarray:
        """``bool (N, classes)``: which classes exist in each item's corpus (the label mask)."""
        masks = {c: np.isin(self.classes, self.corpus_classes.get(c, self.classes)) for c in set(self.corpora)}
        if not self.items:
            return np.zeros((0, len(self.classes)), dtype=bool)
        return np.stack([masks[it.corpus] for it in self.items])


def parse_ravdess_name(name: str) -> dict | None:
    """Fields of a RAVDESS file name (``03-01-05-02-01-01-12.wav`` -> angry, strong, actor 12,
    female); ``None`` for names that do not follow the convention."""
    m = RAVDESS_NAME.match(Path(name).stem)
    if not m:
        return None
    modality, channel, emotion, intensity, statement, repetition, actor = (int(g) for g in m.groups())
    if not 1 <= emotion <= 8 or not 1 <= actor <= 99:
        return None
    return {
        "modality": modality, "channel": channel, "emotion": RAVDESS8[emotion - 1],
        "intensity": "strong" if intensity == 2 else "normal", "statement": statement,
        "repetition": repetition, "actor": actor, "gender": "male" if actor % 2 else "female",
    }


def load_ravdess(root: str | os.PathLike) -> SpeechDataset:
    """Every RAVDESS-named audio file under ``root`` (``Actor_XX/03-01-EE-II-SS-RR-AA.*``);
    labels, actors and genders come from the names. Sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"speech data folder not found: {root}")
    items = []
    for file in sorted(root.rglob("*")):
        if not file.is_file() or file.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        info = parse_ravdess_name(file.name)
        if info is None:
            continue
        items.append(SpeechItem(str(file), RAVDESS8.index(info["emotion"]), f"{info['actor']:02d}",
                                info["gender"], info["intensity"]))
    if not items:
        raise ValueError(f"no RAVDESS-named audio files (03-01-EE-II-SS-RR-AA.wav) under {root}")
    return SpeechDataset(items)


def _speaker_of(path: Path, root: Path) -> str:
    info = parse_ravdess_name(path.name)
    if info:
        return f"{info['actor']:02d}"
    m = CREMA_NAME.match(path.stem)
    if m:
        return m.group(1)
    m = re.match(r"^([A-Za-z]*\d+)[_-]", path.stem)
    return m.group(1) if m else path.stem


def load_speech_folder(root: str | os.PathLike) -> SpeechDataset:
    """``root/<label>/*.wav|flac|mp3|ogg|m4a`` with folder names mapped onto RAVDESS8
    (``fearful`` -> ``fear``, ``surprised`` -> ``surprise`` ...).

    Speakers are taken from the file names where a convention is recognised (RAVDESS,
    CREMA-D ``1001_...``, or a leading ``<id>_``); otherwise each file is its own speaker,
    and cross-validation is then *not* speaker-independent.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"speech data folder not found: {root}")
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        name = normalize_label(folder.name)
        if name not in RAVDESS8:
            raise ValueError(f"class folder {folder.name!r} is not one of {RAVDESS8}")
        for file in sorted(folder.rglob("*")):
            if file.is_file() and file.suffix.lower() in AUDIO_SUFFIXES | VIDEO_SUFFIXES:
                items.append(SpeechItem(str(file), RAVDESS8.index(name), _speaker_of(file, root)))
    if not items:
        raise ValueError(f"no audio files found under {root}/<label>/")
    return SpeechDataset(items)


def load_speech_data(root: str | os.PathLike) -> SpeechDataset:
    """A labelled speech folder: ``manifest.csv`` (columns ``file``, ``speaker``, ``emotion``: see
    :func:`load_manifest_corpus`; a ``<name>_speech`` folder of :data:`SPEECH_CORPORA` keeps its
    label subset), else the RAVDESS layout if file names follow its convention, else the
    ``root/<label>/`` layout."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"speech data folder not found: {root}")
    if (root / "manifest.csv").is_file():
        name = root.name.removesuffix("_speech")
        return load_manifest_corpus(root, name if name in SPEECH_CORPORA else "")
    labelled = [p for p in root.iterdir() if p.is_dir()]
    try:
        if labelled and all(normalize_label(p.name) in RAVDESS8 for p in labelled):
            return load_speech_folder(root)
    except ValueError:
        pass
    return load_ravdess(root)


def speaker_folds(data: SpeechDataset, k: int = 6) -> list[list[str]]:
    """Split speakers into ``k`` disjoint folds, balanced by gender when genders are known.

    Speakers of each gender are sorted and dealt round-robin, so with RAVDESS and ``k=6``
    fold ``i`` holds actors ``{2i+1, 2i+13}`` (male) and ``{2i+2, 2i+14}`` (female):
    fold 1 = actors 01, 02, 13, 14, etc.
    """
    gender = {it.speaker: it.gender or "" for it in data.items}
    speakers = sorted(gender)
    if k < 2 or k > len(speakers):
        raise ValueError(f"cannot make {k} speaker folds from {len(speakers)} speakers")
    folds: list[list[str]] = [[] for _ in range(k)]
    groups = sorted({gender[s] for s in speakers})
    for g in groups:
        for i, s in enumerate(sorted(s for s in speakers if gender[s] == g)):
            folds[i % k].append(s)
    return [sorted(f) for f in folds]


# ----------------------------------------------------------------------------- speech corpora

#: The speech corpora under ``shared/data`` (folder ``<name>_speech``) and the classes each has.
#: EmoDB's ``boredom`` has no counterpart in the emolens vocabulary and is dropped (never mapped).
SPEECH_CORPORA: dict[str, tuple[str, ...]] = {
    "ravdess": RAVDESS8,
    "emodb": ("neutral", "happy", "sad", "angry", "fear", "disgust"),
    "urdu": ("neutral", "happy", "sad", "angry"),
    "turev": ("calm", "happy", "sad", "angry"),
}


def _read_manifest(root: Path) -> list[dict[str, str]]:
    path = root / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.csv in {root}")
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_manifest_corpus(root: str | os.PathLike, corpus: str) -> SpeechDataset:
    """A speech corpus from its ``manifest.csv`` (columns ``file``, ``speaker`` or ``actor``,
    ``emotion``, optional ``gender``/``intensity``). Rows whose emotion is not in the corpus's
    class subset (:data:`SPEECH_CORPORA`, e.g. EmoDB's ``boredom``; any emolens class for another
    corpus) are dropped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"speech data folder not found: {root}")
    allowed = SPEECH_CORPORA.get(corpus, RAVDESS8)
    items = []
    rows = _read_manifest(root)
    missing = {"file", "emotion"} - set(rows[0]) if rows else set()  # no rows at all: "no usable rows" below
    if missing:
        raise ValueError(f"{root / 'manifest.csv'} lacks the column(s) {', '.join(sorted(missing))}")
    for row in rows:
        try:
            name = normalize_label(row["emotion"])
        except ValueError:
            continue
        if name not in allowed:
            continue
        speaker = row.get("speaker") or row.get("actor") or Path(row["file"]).stem  # unknown: a speaker per file
        if corpus == "ravdess" and speaker.isdigit():
            speaker = f"{int(speaker):02d}"
        items.append(SpeechItem(str(root / row["file"]), RAVDESS8.index(name), speaker, row.get("gender") or None,
                                row.get("intensity") or None, corpus))
    if not items:
        raise ValueError(f"no usable rows in {root / 'manifest.csv'}")
    return SpeechDataset(items, RAVDESS8, {corpus: allowed})


def load_emodb(root: str | os.PathLike) -> SpeechDataset:
    """EmoDB (``emodb_speech``): 10 speakers, 6 classes (``boredom``, 81 files, dropped)."""
    return load_manifest_corpus(root, "emodb")


def load_urdu(root: str | os.PathLike) -> SpeechDataset:
    """URDU (``urdu_speech``): talk-show speech, 29 speaker ids, 4 classes (speaker and emotion
    are confounded: see its SOURCE.md)."""
    return load_manifest_corpus(root, "urdu")


def load_turev(root: str | os.PathLike) -> SpeechDataset:
    """TurEV-DB (``turev_speech``): isolated Turkish words, 6 speakers, 4 classes."""
    return load_manifest_corpus(root, "turev")


def concat_speech(parts: dict[str, SpeechDataset]) -> SpeechDataset:
    """One dataset from several corpora: speakers become ``<corpus>/<speaker>`` (never shared
    between corpora), each item keeps its corpus and each corpus its label subset."""
    items, classes = [], {}
    for corpus, data in parts.items():
        classes[corpus] = data.corpus_classes.get(corpus, data.corpus_classes.get("", data.classes))
        for it in data.items:
            items.append(SpeechItem(it.path, it.label, f"{corpus}/{it.speaker}", it.gender, it.intensity, corpus))
    return SpeechDataset(items, RAVDESS8, classes)


def load_speech_corpora(root: str | os.PathLike, names: tuple[str, ...] | list[str] | None = None) -> SpeechDataset:
    """Every corpus ``root/<name>_speech`` (default: all of :data:`SPEECH_CORPORA` that exist)."""
    root = Path(root)
    names = list(names) if names else [n for n in SPEECH_CORPORA if (root / f"{n}_speech").is_dir()]
    if not names:
        raise FileNotFoundError(f"no speech corpora (<name>_speech folders) under {root}")
    parts = {}
    for n in names:
        folder = root / f"{n}_speech"
        if n == "ravdess" and not (folder / "manifest.csv").is_file():
            data = load_ravdess(folder)
            data = SpeechDataset([SpeechItem(it.path, it.label, it.speaker, it.gender, it.intensity, n)
                                  for it in data.items], RAVDESS8, {n: RAVDESS8})
        else:
            data = load_manifest_corpus(folder, n)
        parts[n] = data
    return concat_speech(parts)


def speaker_group_folds(speakers: np.ndarray, k: int) -> list[list[str]]:
    """Speakers dealt into ``k`` folds, largest first onto the fold with the fewest files (so
    folds are about equally large even when speakers are not)."""
    names, counts = np.unique(np.asarray(speakers), return_counts=True)
    order = sorted(zip(counts.tolist(), names.tolist()), key=lambda t: (-t[0], t[1]))
    k = min(k, len(names))
    folds: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for n, s in order:
        j = int(np.argmin(sizes))
        folds[j].append(s)
        sizes[j] += n
    return [sorted(f) for f in folds]
