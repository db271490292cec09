"""The results files the research commands share: ``docs/results.md`` is written by the UCM
evaluation (:mod:`evaluate`) and carries blocks written by other commands (the generalisation block
of :mod:`external`, the sections of other collections such as RSICD); each rewrite keeps the others'."""
from __future__ import annotations

import re
from pathlib import Path


SECTION_BEGIN, SECTION_END = "<!-- external: begin -->", "<!-- external: end -->"
_BLOCK = re.compile(r"<!-- ([\w-]+): begin -->.*?<!-- \1: end -->", re.S)


def kept_section(path: Path) -> str:
    """The blocks other commands wrote into an existing results file ("" if none), to carry over on rewrite."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""
    return "".join("\n\n" + m.group(0) + "\n" for m in _BLOCK.finditer(text))


def with_section(text: str, section: str, name: str = "external") -> str:
    """``text`` with its ``name`` block replaced by ``section`` (appended if it had none)."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    block = f"{begin}\n{section}{end}"
    a, b = text.find(begin), text.find(end)
    if a >= 0 and b > a:
        return text[:a] + block + text[b + len(end):]
    return text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
