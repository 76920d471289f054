"""Text and numbers as the reports write them: escaped for HTML or Markdown, rounded, "n/a"
for anything missing or non-finite."""

from __future__ import annotations

import html
import math
import re

from rewardtune.text import printable

_MD_SPECIAL = re.compile(r"([\\`*_\[\]()!<>|#~&{}])")


def esc(text: object) -> str:
    """HTML-escape user text; '://' is written as an entity so no URL appears in the file."""
    return html.escape(printable(str(text))).replace("://", ":&#47;&#47;")


def md(text: object) -> str:
    """Text safe inside a Markdown table cell: no raw HTML tags, no pipes, one line."""
    escaped = printable(str(text)).replace("<", "&lt;").replace("|", "\\|")
    return " ".join(escaped.split())


def md_text(text: object) -> str:
    """User or model text as inert Markdown: every character that could start a link, an
    image, HTML, emphasis or code is backslash-escaped, and URLs are broken as in the HTML
    (GitHub links a bare ``https://`` or ``www.``)."""
    escaped = _MD_SPECIAL.sub(r"\\\1", " ".join(printable(str(text)).split()))
    escaped = escaped.replace("://", ":&#47;&#47;")
    return re.sub(r"(?i)\bwww\.", lambda m: m.group(0)[:3] + "&#46;", escaped)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def num(x: object, signed: bool = False) -> str:
    if not is_number(x):
        return "n/a"
    sign = "+" if signed else ""
    return f"{x:{sign},.0f}" if abs(x) >= 1e4 else f"{x:{sign}.4g}"


def sort_key(x: object) -> float:
    return float(x) if is_number(x) else math.nan


def pct(x: object) -> str:
    return f"{x:.1%}" if is_number(x) else "n/a"


def share(part: float, whole: float) -> str:
    """A small percentage with 3 significant digits: 1.35%, 0.000423%."""
    return f"{100 * part / whole:.3g}%"


def human_count(n: object) -> str:
    """1.84M, 577, 136.36M."""
    if not is_number(n):
        return "n/a"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(int(n))


def duration(seconds: object) -> str:
    if not is_number(seconds):
        return "unknown (no run_info.json)"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def mapping(data: dict) -> str:
    """``{"r": 16, "alpha": 16}`` -> ``r=16, alpha=16``."""
    return ", ".join(f"{k}={v}" for k, v in data.items())
