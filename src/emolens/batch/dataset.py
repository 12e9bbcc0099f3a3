"""The Parquet datasets of a run, partitioned by input: ``DIR/frames/input=<stem>/part-0.parquet``
(the face rows of videos and photos, one schema for every partition) and
``DIR/segments/input=<stem>/part-0.parquet`` (the speech segments of audio inputs)."""

from __future__ import annotations

# Only the standard library at module level (see emolens.batch.engines).
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DATASETS = ("frames", "segments")


def partitions(out_dir: Path, stem: str) -> list[Path]:
    """The frames and the segments partition file of one input."""
    return [out_dir / name / f"input={stem}" / "part-0.parquet" for name in DATASETS]


def write_atomic(table: Any, path: Path) -> None:
    """Write an Arrow table to ``path`` through a temp file and a rename."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # a dot name: dataset readers skip it
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def frames_schema(labels: Sequence[str]) -> Any:
    """Arrow schema of ``DIR/frames``: the frames-CSV columns with every probability group
    (``p_<class>``, ``p_voice_<class>``, ``p_fused_<class>``; empty where absent) and ``kind``."""
    import pyarrow as pa

    from emolens.outputs import FRAME_COLUMNS

    types = {"frame": pa.int64(), "track_id": pa.int64(), "x": pa.int64(), "y": pa.int64(), "w": pa.int64(),
             "h": pa.int64(), "detected": pa.bool_(), "classified": pa.bool_(), "label": pa.string()}
    names = [*FRAME_COLUMNS, *(f"p_{n}" for n in labels),
             *(f"p_{g}_{n}" for g in ("voice", "fused") for n in labels)]
    return pa.schema([*((n, types.get(n, pa.float64())) for n in names), ("kind", pa.string())])


def frames_table(table: Any, kind: str, schema: Any) -> Any:
    """A DataFrame of frame rows as an Arrow table of ``schema`` (missing columns empty)."""
    import pyarrow as pa

    if table.empty:
        return schema.empty_table()
    table = table.reindex(columns=[n for n in schema.names if n != "kind"])
    table["kind"] = kind
    for name in ("detected", "classified"):
        table[name] = table[name].astype(bool)
    return pa.Table.from_pandas(table, schema=schema, preserve_index=False)


def csv_to_partition(csv_path: Path, part: Path, schema: Any, chunk_rows: int = 50_000) -> None:
    """A frames CSV into its Parquet partition, ``chunk_rows`` at a time (memory stays flat
    however long the video)."""
    import pandas as pd
    import pyarrow.parquet as pq

    part.parent.mkdir(parents=True, exist_ok=True)
    tmp = part.with_name(f".{part.name}.tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for chunk in pd.read_csv(csv_path, chunksize=chunk_rows):
            writer.write_table(frames_table(chunk, "video", schema))
    os.replace(tmp, part)


def photo_table(faces: Sequence[Any], schema: Any) -> Any:
    """The frame rows of one photo's faces (:class:`~emolens.api.FaceResult`), one per face."""
    import numpy as np
    import pandas as pd

    from emolens.outputs import LANDMARK_COLUMNS

    rows = []
    for i, f in enumerate(faces):
        x, y, w, h = (int(round(float(v))) for v in f.face.box)
        marks = f.face.landmarks
        points = ([float("nan")] * 10 if marks is None
                  else [round(float(v), 1) for v in np.asarray(marks).reshape(-1)[:10]])
        rows.append({"time_s": 0.0, "frame": 0, "track_id": i, "x": x, "y": y, "w": w, "h": h,
                     "score": round(float(f.face.score), 3), "detected": True, "classified": True,
                     "evidence": float("nan"), **dict(zip(LANDMARK_COLUMNS, points)),
                     "label": f.label, **{f"p_{k}": round(float(v), 4) for k, v in f.probs.items()}})
    return frames_table(pd.DataFrame(rows), "photo", schema)


def segments_table(segments: Sequence[Any], labels: Sequence[str]) -> Any:
    """The rows of ``DIR/segments`` for one audio input's speech segments."""
    import pyarrow as pa

    columns: dict[str, list] = {"start_s": [], "end_s": [], "label": [], **{f"p_{n}": [] for n in labels}}
    for seg in segments:
        d = seg.to_dict()
        for key in ("start_s", "end_s", "label"):
            columns[key].append(d[key])
        for n in labels:
            columns[f"p_{n}"].append(float(seg.probs.get(n, 0.0)))
    schema = pa.schema([("start_s", pa.float64()), ("end_s", pa.float64()), ("label", pa.string()),
                        *((f"p_{n}", pa.float64()) for n in labels)])
    return pa.table(columns, schema=schema)
