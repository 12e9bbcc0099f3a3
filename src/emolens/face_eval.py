"""Scoring a face model on labelled faces: a FER2013 csv split or an image folder (``evaluate face``)."""

from __future__ import annotations

import os
from pathlib import Path

from emolens.datasets import FaceDataset, load_face_data, load_fer2013, load_image_folder
from emolens.expression import ExpressionModel
from emolens.face_crops import FaceCropper
from emolens.metrics import classification_report, group_accuracy

SPLIT_FOLDERS = ("train", "test", "val")


def labelled_faces(data: str | os.PathLike, net: ExpressionModel, split: str = "PrivateTest",
                   framing: str = "auto", progress: bool = False,
                   ferplus: str | os.PathLike | None = None) -> FaceDataset:
    """The faces of ``data`` as ``net`` expects them: a FER2013 csv's ``split``, a class folder
    ``root/<class>/*`` (all of it), or a folder with ``train/``, ``val/``, ``test/`` (``split``
    maps to them). Image folders are cut with :class:`~emolens.face_crops.FaceCropper` for ``net``'s
    template. ``ferplus`` (FER2013 csv only): FER+ majority labels instead of FER2013's
    (:func:`~emolens.datasets.load_fer2013` with ``relabel``). Raises ``FileNotFoundError`` /
    ``ValueError`` for missing or unusable data."""
    data = Path(data)
    for path in (data, ferplus):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{path}: not found")
    if ferplus is not None:
        if not data.is_file():
            raise ValueError("FER+ labels go with a FER2013 csv, not an image folder")
        dataset = load_fer2013(data, split, ferplus, relabel=True)
        return _check_classes(dataset, net)
    cropper = FaceCropper(framing, net.spec.frame, net.spec.template) if data.is_dir() else framing
    if data.is_dir() and not any((data / s).is_dir() for s in SPLIT_FOLDERS):
        dataset = load_image_folder(data, net.spec.frame, cropper, progress=progress)
    else:
        splits = load_face_data(data, framing=cropper, progress=progress)
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; choose from {', '.join(splits)}")
        dataset = splits[split]
    return _check_classes(dataset, net)


def _check_classes(dataset: FaceDataset, net: ExpressionModel) -> FaceDataset:
    if tuple(dataset.classes) != net.labels:
        raise ValueError(f"the model's classes {net.labels} differ from the data's {tuple(dataset.classes)}")
    return dataset


def evaluate_faces(data: str | os.PathLike, model: str | os.PathLike | ExpressionModel = "default",
                   split: str = "PrivateTest", framing: str = "auto", regions: bool = False, device: str = "cpu",
                   progress: bool = False, ferplus: str | os.PathLike | None = None) -> dict:
    """Accuracy, macro-F1, per-class scores and confusion matrix of a face model on labelled faces
    (:func:`~emolens.metrics.classification_report`, plus ``split``, ``model``, ``labels_from``
    and ``skipped``: faces left out, by reason: class folders the model lacks, or FER+ majorities
    it lacks).

    Image folders add ``framing`` (``mode``, ``groups``: accuracy per way a face was cut),
    ``images`` (per image: path, true and predicted label, framing, probabilities) and
    ``unreadable`` (files that could not be decoded, left out). ``regions``:
    also the region evidence (:func:`~emolens.explanations.region_evidence`). ``ferplus``: score
    against the FER+ majority labels of a FER2013 csv.
    """
    net = model if isinstance(model, ExpressionModel) else ExpressionModel(model, device=device)
    dataset = labelled_faces(data, net, split, framing, progress, ferplus)
    probs = net.predict(dataset.images)
    pred = probs.argmax(1)
    report = classification_report(dataset.labels, pred, dataset.classes)
    report.update(split=split, model=str(net.path), labels_from="FER+ majority vote" if ferplus else "dataset",
                  skipped=dataset.skipped)
    if dataset.framing is not None and dataset.paths is not None:
        report["framing"] = {"mode": framing, "groups": group_accuracy(dataset.framing, dataset.labels, pred)}
        report["unreadable"] = list(dataset.unreadable)
        report["images"] = [
            {"path": str(p), "true": dataset.classes[t], "predicted": net.labels[int(k)], "framing": str(f),
             "probs": [round(float(v), 4) for v in q]}
            for p, t, f, k, q in zip(dataset.paths, dataset.labels, dataset.framing, pred, probs)
        ]
    if regions:
        from emolens.explanations import region_evidence

        report["regions"] = region_evidence(net, dataset.images, dataset.labels)
    return report
