"""Generated sections of the shipped model cards (``models/face_<name>.md``).

Commands that measure something about a shipped model (``emolens evaluate face --regions --card``,
``benchmarks/bench_explain.py --card``) write their table into a section of the card between
``<!-- emolens:NAME:start -->`` and ``<!-- emolens:NAME:end -->``; rerunning replaces it, and
``emolens.train.face_export.ship_face_model`` carries the sections over when it rewrites a card.
"""

from __future__ import annotations

import re
from pathlib import Path


def _markers(section: str) -> tuple[str, str]:
    return f"<!-- emolens:{section}:start -->", f"<!-- emolens:{section}:end -->"


def card_path(model: str) -> Path:
    """The markdown card of a shipped face model (registry name) or of an ``.onnx`` path."""
    from emolens.expression import resolve_model

    return resolve_model(model).with_suffix(".md")


def set_section(md: str, section: str, text: str) -> str:
    """``md`` with ``section`` set to ``text`` (replaced in place, else inserted before ``## Limits``,
    else appended)."""
    start, end = _markers(section)
    block = f"{start}\n{text.strip()}\n{end}\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(md):
        return pattern.sub(lambda _: block, md, count=1)
    at = md.find("## Limits")
    return md[:at] + block + "\n" + md[at:] if at >= 0 else md.rstrip("\n") + "\n\n" + block


def sections(md: str) -> dict[str, str]:
    """The generated sections of a card: ``{name: text}``."""
    found = re.findall(r"<!-- emolens:([\w-]+):start -->\n(.*?)\n<!-- emolens:\1:end -->", md, re.S)
    return dict(found)


def write_card_section(model: str, section: str, text: str) -> Path:
    """Set ``section`` of the model card of ``model`` to ``text``; returns the card's path."""
    path = card_path(model)
    path.write_text(set_section(path.read_text(), section, text))
    return path
