"""Provider keys and the database URL from Prefect Secret blocks, loaded when a run starts.

A deployment's job variables name blocks, never values: `ANTHROPIC_API_KEY_BLOCK=
anthropic-api-key` means "if ANTHROPIC_API_KEY is not set where this run executes, read it
from the Secret block `anthropic-api-key`". `prefect deploy` would resolve a
`{{ prefect.blocks.secret.* }}` reference at deploy time and store the value in the
deployment; a block name is resolved here, in the flow-run process, and the value stays in
its memory (tam.settings), out of the deployment, the run's parameters, logs and artifacts.

Importing this module (the `tasks` package does) installs the loader into tam.settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from tam.settings import set_secret_source

BLOCK_SUFFIX = "_BLOCK"


class SecretBlockError(RuntimeError):
    """A job variable names a Secret block that cannot be read."""


def block_names(names: Sequence[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variable → block name, for the `names` whose `<NAME>_BLOCK` variable is set."""
    environ = os.environ if environ is None else environ
    return {name: block for name in names if (block := environ.get(name + BLOCK_SUFFIX))}


def load_secret_blocks(names: Sequence[str]) -> dict[str, str]:
    """The value of each unset variable in `names` whose block is named (see module doc)."""
    wanted = block_names(names)
    if not wanted:
        return {}
    from prefect.client.orchestration import get_client

    values: dict[str, str] = {}
    # NOTE: the sync client, because settings are built from sync code, also inside a
    # running event loop; it costs one round trip per block, once per process.
    with get_client(sync_client=True) as client:
        for name, block in wanted.items():
            try:
                document = client.read_block_document_by_name(
                    block, block_type_slug="secret", include_secrets=True
                )
            except Exception as exc:
                # The block's name is not a secret; what the server said might quote values.
                raise SecretBlockError(
                    f"{name}{BLOCK_SUFFIX} names the Secret block {block!r}, which could not "
                    f"be read ({type(exc).__name__})"
                ) from None
            value = (document.data or {}).get("value")
            if not isinstance(value, str) or not value:
                raise SecretBlockError(f"the Secret block {block!r} holds no text value")
            values[name] = value
    return values


def install() -> None:
    """Make tam.settings fill unset secrets from the blocks the environment names."""
    set_secret_source(load_secret_blocks)


install()
