"""The sourcing and refine chunk tasks: tam.steps' chunk functions under the chunk policy."""

from __future__ import annotations

from tam.steps.refine import discover_chunk
from tam.steps.sourcing import source_chunk
from tasks.chunks import chunk_task

source_chunk_task = chunk_task(source_chunk, name="source-chunk", run_name="source {chunk}")
refine_discover_task = chunk_task(
    discover_chunk, name="refine-discover", run_name="discover look-alikes {chunk}"
)
