"""Prefect tasks: the units that are retried, limited and shown in the UI."""
