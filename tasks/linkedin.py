"""The check_linkedin chunk task: `tam.steps.linkedin.check_linkedin_chunk` under the chunk
policy."""

from __future__ import annotations

from tam.steps.linkedin import check_linkedin_chunk
from tasks.chunks import chunk_task

check_linkedin_task = chunk_task(
    check_linkedin_chunk, name="check-linkedin-posts", run_name="linkedin posts {chunk}"
)
