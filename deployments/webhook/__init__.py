"""The dispatch webhook (production): the app's tam-run-job Edge Function starts, watches and
cancels job runs through it."""

from deployments.webhook.app import create_app, run

__all__ = ["create_app", "run"]
