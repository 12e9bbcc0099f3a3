"""The inputs of a batch: folders, globs and list files -> media files, each a :class:`Job`
with a kind (video, photo, audio) and an output stem unique within the run."""

from __future__ import annotations

# Only the standard library at module level (see emolens.batch.engines).
import csv
import glob
import io
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from emolens.batch.jobs import Job

KINDS = ("video", "photo", "audio")
#: Inputs with these suffixes are lists of inputs (one path per line, or CSV with a path/input column).
LIST_SUFFIXES = {".txt", ".csv", ".lst", ".list"}
#: Names in the output folder that input folders never take.
RESERVED = {"frames", "segments", "manifest", "batch"}


def _suffixes() -> tuple[set[str], set[str], set[str]]:
    from emolens.datasets import AUDIO_SUFFIXES
    from emolens.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    return set(IMAGE_SUFFIXES), set(VIDEO_SUFFIXES), set(AUDIO_SUFFIXES)


def input_kind(path: str) -> str:
    """``photo``, ``audio`` or ``video`` (by suffix; anything else is tried as a video)."""
    from emolens.media import source_kind

    if source_kind(path) == "stream":
        return "video"
    images, _, audio = _suffixes()
    suffix = Path(path).suffix.lower()
    return "photo" if suffix in images else "audio" if suffix in audio else "video"


def _is_media(path: Path) -> bool:
    images, videos, audio = _suffixes()
    return path.suffix.lower() in images | videos | audio


def _walk(folder: Path, exclude: Path | None) -> list[str]:
    found = []
    for f in sorted(folder.rglob("*")):
        if not f.is_file() or not _is_media(f) or any(part.startswith(".") for part in f.relative_to(folder).parts):
            continue
        if exclude is not None and f.resolve().is_relative_to(exclude):
            continue
        found.append(os.path.abspath(f))
    return found


def read_input_list(path: str | os.PathLike) -> list[str]:
    """Entries of a list file: one path per line (blank lines and ``#`` comments skipped), or a
    CSV with a ``path`` or ``input`` column (so ``DIR/manifest.csv`` works). Relative entries are
    relative to the list file's folder. Raises ``ValueError`` for a CSV without such a column."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    header = [h.strip().lower() for h in next(csv.reader([lines[0]]))]
    if path.suffix.lower() == ".csv" or "path" in header or "input" in header:
        rows = list(csv.reader(io.StringIO("\n".join(lines))))
        names = [h.strip().lower() for h in rows[0]]
        column = "path" if "path" in names else "input" if "input" in names else None
        if column is None:
            raise ValueError(f"{path}: a CSV list needs a 'path' or 'input' column (has {', '.join(rows[0])})")
        i = names.index(column)
        entries = [r[i].strip() for r in rows[1:] if len(r) > i and r[i].strip()]
    else:
        entries = lines
    from emolens.media import source_kind

    return [e if source_kind(e) == "stream" or os.path.isabs(e) else str(path.parent / e) for e in entries]


def discover_inputs(args: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None,
                    warn: Callable[[str], None] | None = None) -> list[str]:
    """Expand folders (walked recursively for photos, videos and audio files, hidden ones
    skipped), globs (``"data/**/*.mp4"``) and list files (``.txt``/``.csv``/``.lst``, see
    :func:`read_input_list`) into inputs: absolute paths (URLs kept), in order, without
    duplicates. Files under ``exclude`` (the output folder) are left out; ``warn`` gets a line
    for a pattern that matches nothing. A path that does not exist is kept (it fails as an input).
    Raises ``ValueError`` for a camera index (a camera never ends: use ``emolens live``)."""
    from emolens.media import source_kind

    skip = Path(exclude).resolve() if exclude is not None else None
    out: list[str] = []

    def expand(arg: str, allow_lists: bool) -> None:
        kind = source_kind(arg)
        if kind == "camera":
            raise ValueError(f"{arg!r} is a camera index: a batch needs files (use `emolens live` for a camera)")
        if kind == "stream":
            out.append(arg)
            return
        p = Path(arg)
        if p.is_dir():
            out.extend(_walk(p, skip))
        elif p.is_file() and allow_lists and p.suffix.lower() in LIST_SUFFIXES:
            for entry in read_input_list(p):
                expand(entry, allow_lists=False)
        elif not p.exists() and glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches and warn:
                warn(f"no match for {arg}")
            for m in matches:
                if Path(m).is_dir():
                    out.extend(_walk(Path(m), skip))
                elif _is_media(Path(m)):
                    out.append(os.path.abspath(m))
        else:
            out.append(os.path.abspath(arg))

    for arg in args:
        expand(str(arg), allow_lists=True)
    return list(dict.fromkeys(out))


def _safe_stem(source: str) -> str:
    from emolens.video import output_stem

    stem = re.sub(r"[^\w.-]+", "_", output_stem(source)).strip("_") or "input"
    return stem if stem.lower() not in RESERVED else f"{stem}_"


def plan_jobs(inputs: Sequence[str], known: dict[str, str] | None = None) -> list[Job]:
    """A :class:`Job` per input; ``known`` (input -> stem, from an earlier manifest) keeps stems
    stable from one run to the next; new inputs get unique ones."""
    from emolens.outputs import unique_stem

    known = known or {}
    used = set(RESERVED) | {s for i, s in known.items() if s}
    jobs = []
    for source in inputs:
        stem = known.get(source) or unique_stem(_safe_stem(source), Path(source).suffix, used)
        jobs.append(Job(source, input_kind(source), stem))
    return jobs
