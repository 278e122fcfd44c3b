"""The Prefect side of a job run: session (job row, artifacts, cancellation), flow hooks,
account limiters leased from Prefect, Secret blocks. The work itself is in `tam` (no
Prefect there); tasks wrap it in `tasks`."""
