"""Core of the TAM pipeline: settings, models, stores, provider clients, limiters, emulators.

Nothing in this package imports Prefect, so it can be tested and reused without a server.
"""

__version__ = "0.1.0"
