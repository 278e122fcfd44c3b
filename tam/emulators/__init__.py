"""Local HTTP emulators of every external API, speaking each provider's real wire format.

One server hosts them all, each under ``/<provider>`` (``/anthropic/v1/messages`` ...), with
knobs (latency, errors, rate caps, ...) and counters under ``/<provider>/_emulator/``.
See :mod:`tam.emulators.base` for how to add a provider.
"""

from tam.emulators.base import (
    PROVIDERS,
    Call,
    EmulatedError,
    EmulatorApp,
    Endpoint,
    ErrorReason,
    ProviderEmulator,
    build_app,
    load_providers,
    register_provider,
)
from tam.emulators.knobs import Counters, Knobs, latency_for_key
from tam.emulators.server import EMULATOR_KEY, EmulatorControl, EmulatorServer, env_for
from tam.emulators.world import World, sample_companies

__all__ = [
    "EMULATOR_KEY",
    "PROVIDERS",
    "Call",
    "Counters",
    "EmulatedError",
    "EmulatorApp",
    "EmulatorControl",
    "EmulatorServer",
    "Endpoint",
    "ErrorReason",
    "Knobs",
    "ProviderEmulator",
    "World",
    "build_app",
    "env_for",
    "latency_for_key",
    "load_providers",
    "register_provider",
    "sample_companies",
]
