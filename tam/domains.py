"""Domain normalization: one company per (project, normalized domain)."""

from __future__ import annotations

import re

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")


def normalize_domain(value: str | None) -> str | None:
    """Lowercase, no scheme, no ``www.``, no path, no port, no trailing dot.

    Returns None for empty or obviously invalid input (no dot), so callers can keep the
    company without a domain instead of inventing one.
    """
    if not value:
        return None
    text = value.strip().lower()
    text = _SCHEME.sub("", text)
    text = text.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    text = text.rsplit("@", 1)[-1]  # user:pass@host
    text = text.split(":", 1)[0].strip(".")
    if text.startswith("www."):
        text = text[4:]
    if "." not in text or " " in text:
        return None
    return text
