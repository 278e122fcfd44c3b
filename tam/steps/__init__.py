"""The work of each pipeline step as plain async functions (Prefect tasks wrap them)."""
