"""Text from the outside world made storable: no NUL, no other C0 controls, no lone surrogates.

Postgres refuses NUL in `text` ("A string literal cannot contain NUL (0x00) characters") and
`\\u0000` inside `jsonb` ("unsupported Unicode escape sequence"), and a lone UTF-16 surrogate
(valid in a JSON escape, not in UTF-8) cannot be encoded at all. One such character in a
scraped company name used to fail a whole batch of rows, on every re-run. SQLite accepts all
of them, so only this boundary keeps the two databases in step.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls except \t \n \r, and the surrogate range (only lone ones survive decoding).
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def clean_text(value: str) -> str:
    """`value` without the characters a database may refuse; the same object when clean."""
    if _UNSTORABLE.search(value) is None:
        return value
    return _UNSTORABLE.sub("", value)


def clean_json(value: Any) -> Any:
    """`value` with every string in it cleaned, dict keys included, at any depth.

    Containers are rebuilt only when something in them changed, so clean documents (nearly
    all of them) cost one scan and no copies.
    """
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        cleaned = {clean_json(k): clean_json(v) for k, v in value.items()}
        same = len(cleaned) == len(value) and all(
            a is b and c is d for (a, c), (b, d) in zip(value.items(), cleaned.items(), strict=True)
        )
        return value if same else cleaned
    if isinstance(value, list | tuple):
        items = [clean_json(v) for v in value]
        if all(a is b for a, b in zip(value, items, strict=True)):
            return value
        return tuple(items) if isinstance(value, tuple) else items
    return value
