"""Row <-> model mapping and in-batch merging for SqlStore."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar
from uuid import UUID, uuid4

import sqlalchemy as sa
from pydantic import BaseModel

from tam.models import NewCompany, NewContact
from tam.schema import companies, contacts

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


def plain(value: Any) -> Any:
    # NOTE: drivers bind exact str; a StrEnum member is a str subclass some of them refuse.
    return value.value if isinstance(value, Enum) else value


def to_model(model: type[ModelT], row: sa.Row[Any]) -> ModelT:
    """Build a model from a row; NULL columns fall back to the model's defaults.

    NOTE: rows written by the app itself may hold NULL where our models have a default
    (raw_data, source, attempt...); dropping them keeps such rows readable.
    """
    return model.model_validate({k: v for k, v in row._mapping.items() if v is not None})


def _row(model: BaseModel, table: sa.Table, *, now: datetime) -> dict[str, Any]:
    data = model.model_dump()
    row = {name: plain(data[name]) for name in table.c.keys() if name in data}
    row["id"] = uuid4()
    row["created_at"] = now
    return row


def company_rows(items: Sequence[NewCompany], *, now: datetime) -> list[dict[str, Any]]:
    """Insert rows with fresh ids; the store tells new rows from merged ones by that id."""
    return [_row(item, companies, now=now) for item in items]


def contact_rows(items: Sequence[NewContact], *, now: datetime) -> list[dict[str, Any]]:
    return [_row(item, contacts, now=now) for item in items]


def merge_in_batch(
    items: Sequence[ModelT], key: Callable[[ModelT], Hashable | None]
) -> list[ModelT]:
    """One item per key, the first one, with its empty fields filled from later duplicates.

    NOTE: Postgres refuses an INSERT ... ON CONFLICT DO UPDATE that touches the same row
    twice, so duplicates must go before the statement; items without a key all stay.
    """
    out: list[ModelT] = []
    position: dict[Hashable, int] = {}
    for item in items:
        k = key(item)
        if k is None:
            out.append(item)
            continue
        if k not in position:
            position[k] = len(out)
            out.append(item)
            continue
        first = out[position[k]]
        fill = {
            name: value
            for name, value in item
            if value is not None and getattr(first, name) is None
        }
        if fill:
            out[position[k]] = first.model_copy(update=fill)
    return out


def company_key(item: NewCompany) -> tuple[UUID, str] | None:
    return (item.project_id, item.domain) if item.domain else None


def contact_key(item: NewContact) -> tuple[UUID, str]:
    return (item.project_id, item.linkedin_url)


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
