"""The results files the research commands share: ``docs/results.md`` is written by the UCM
evaluation (:mod:`evaluate`) and carries a generalisation block written by another command
(:mod:`external`); each rewrite keeps the other's part."""
from __future__ import annotations

from pathlib import Path


SECTION_BEGIN, SECTION_END = "<!-- external: begin -->", "<!-- external: end -->"


def kept_section(path: Path) -> str:
    """The generalisation block of an existing results file ("" if none), to carry over on rewrite."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""
    a, b = text.find(SECTION_BEGIN), text.find(SECTION_END)
    return "\n\n" + text[a:b + len(SECTION_END)] + "\n" if a >= 0 and b > a else ""


def with_section(text: str, section: str) -> str:
    """``text`` with its generalisation block replaced by ``section`` (appended if it had none)."""
    block = f"{SECTION_BEGIN}\n{section}{SECTION_END}"
    a, b = text.find(SECTION_BEGIN), text.find(SECTION_END)
    if a >= 0 and b > a:
        return text[:a] + block + text[b + len(SECTION_END):]
    return text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
