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

    Nearly every document is clean: one read-only scan proves it and returns it as is;
    only a dirty one is copied.
    """
    return _cleaned(value) if _dirty(value) else value


def _dirty(value: Any) -> bool:
    # NOTE: the strings gathered and searched in one regex pass over their concatenation:
    # a search per string cost more than the rest of a row's validation.
    strings: list[str] = []
    _gather(value, strings)
    return _UNSTORABLE.search("".join(strings)) is not None


def _gather(value: Any, strings: list[str]) -> None:
    if isinstance(value, str):
        strings.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                strings.append(key)
            if isinstance(item, str):
                strings.append(item)
            elif isinstance(item, dict | list | tuple):
                _gather(item, strings)
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, str):
                strings.append(item)
            elif isinstance(item, dict | list | tuple):
                _gather(item, strings)


def _cleaned(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {_cleaned(k): _cleaned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_cleaned(v) for v in value)
    return value
