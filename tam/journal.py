"""A per-job local journal of paid results, so a killed worker never pays twice.

Results are batched before they reach the database (≤ 1 round trip per batch), which
leaves a window in which a provider has answered — and billed — but the row is not written
yet. Each answer is appended here the moment it arrives (a plain write: it survives the
process being killed, since the data is in the OS page cache); the next run of the same
job replays the journal into the database before it decides what is still pending, and
the journal is removed once every result is in the database.

The journal lives under `TAM_DATA_DIR` (default `./.tam`); a containerised worker keeps
this guarantee across restarts only with that directory on a volume.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ResultJournal(Generic[M]):
    """Append-only JSON lines of one job step's results."""

    def __init__(self, directory: Path, job_id: UUID, step: str, model: type[M]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{job_id}-{step}.jsonl"
        self._model = model
        self._fd: int | None = None

    def replay(self) -> list[M]:
        """Results journaled by an earlier run that may not have reached the database.
        A torn last line (killed mid-write) is skipped: its item is simply redone."""
        return [result for batch in self.replay_batches() for result in batch]

    def replay_batches(self, size: int = 500) -> Iterator[list[M]]:
        """The same results, `size` at a time, read line by line: a journal as large as
        its job is never in memory at once."""
        if not self.path.exists():
            return
        batch: list[M] = []
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    batch.append(self._model.model_validate_json(line))
                except ValidationError:
                    continue
                if len(batch) >= size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def append(self, result: M) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(self._fd, result.model_dump_json().encode() + b"\n")

    def close(self, *, remove: bool) -> None:
        """Close; `remove` once every journaled result is known to be in the database."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if remove:
            self.path.unlink(missing_ok=True)
