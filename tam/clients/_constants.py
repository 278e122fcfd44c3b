"""Retry numbers for every provider client, in one place."""

INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
# 429s are the provider pacing us, not a fault: they get a budget of their own so a
# rate-limit storm slows a job down instead of failing items.
MAX_RATE_LIMIT_WAITS = 200
MAX_RETRY_AFTER_S = 120.0
