"""The qualify chunk task: `tam.steps.qualify.qualify_chunk` under the chunk policy."""

from __future__ import annotations

from tam.steps.qualify import qualify_chunk
from tasks.chunks import chunk_task

qualify_chunk_task = chunk_task(qualify_chunk, name="qualify-chunk", run_name="qualify {chunk}")
