"""No secret value is stored in Prefect; workers resolve keys at run time (design §8).

On the session's real Prefect server: Secret blocks hold recognisable fake values, the
repository's prefect.yaml is deployed with the real `prefect deploy`, a flow run is created
from a deployment and executed by a real process worker whose environment holds no key, and
then everything Prefect keeps about deployments, work pools, flow runs, logs and artifacts is
read back through its API and searched for every value. The run succeeds only if the flow
read the database URL and the Anthropic key from the blocks (the emulator accepts only the
block's key), so run-time resolution is proven, not assumed.
"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from prefect.client.orchestration import get_client

from tam.emulators.server import env_for
from tam.models import JobStatus
from tam.settings import secret_env_names
from tam.stores import open_store
from tests.helpers.seed import seed_project
from tests.test_prefect_yaml import ROOT, deployments, existing

pytestmark = pytest.mark.prefect

# Block name → the variable whose value it holds (as deployments/README.md creates them).
BLOCKS = {
    "tam-database-url": "TAM_DATABASE_URL",
    "anthropic-api-key": "ANTHROPIC_API_KEY",
    "prospeo-api-key": "PROSPEO_API_KEY",
    "hunter-api-key": "HUNTER_API_KEY",
    "neverbounce-api-key": "NEVERBOUNCE_API_KEY",
    "brightdata-api-token": "BRIGHTDATA_API_TOKEN",
    "discolike-api-key": "DISCOLIKE_API_KEY",
    "google-places-api-key": "GOOGLE_PLACES_API_KEY",
}
PREFECT = [sys.executable, "-m", "prefect", "--no-prompt"]


@pytest.fixture
async def secret_blocks(prefect_server: Any, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """Every block of prefect.yaml saved with a fake value no other code could produce."""
    from prefect.blocks.system import Secret

    marker = uuid4().hex[:12]
    # The database URL is real (the flow run must reach it); its path carries the marker.
    values = {
        block: f"fake-{block}-{marker}"
        for block in BLOCKS
        if block != "tam-database-url"
    }  # fmt: skip
    values["tam-database-url"] = f"sqlite+aiosqlite:///{tmp_path / f'tam-{marker}.db'}"
    for block, value in values.items():
        await Secret(value=value).asave(block, overwrite=True)
    yield values
    async with get_client() as client:
        for block in values:
            await client.delete_block_document(
                (await client.read_block_document_by_name(block, "secret")).id
            )


def _cli_env(prefect_server: Any, home: Path) -> dict[str, str]:
    """The operator's shell: the test server, and no key of the test session."""
    env = {k: v for k, v in os.environ.items() if k not in secret_env_names()}
    return {**env, **prefect_server.env(), "PREFECT_HOME": str(home)}


def _api_json(api_url: str, resource: str) -> str:
    # Everything the API hands a reader, as it hands it over (the text, not the models).
    response = httpx.post(f"{api_url}/{resource}/filter", json={"limit": 200}, timeout=30)
    response.raise_for_status()
    assert response.json(), f"{resource}: nothing to check"
    return response.text


def _leaks(text: str, values: dict[str, str]) -> list[str]:
    return [block for block, value in values.items() if value in text]


async def test_deploy_stores_no_secret_and_the_worker_resolves_keys_at_run_time(
    prefect_server: Any,
    secret_blocks: dict[str, str],
    emulators: Any,
    emulator_control: Any,
    tmp_path: Path,
) -> None:
    env = _cli_env(prefect_server, tmp_path / "cli-home")
    subprocess.run(
        [*PREFECT, "work-pool", "create", "tam-process", "--type", "process", "--overwrite"],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    done = subprocess.run(
        [*PREFECT, "deploy", "-n", "*/tam-process"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not _leaks(done.stdout + done.stderr, secret_blocks)

    wanted = [c for c in deployments() if c["name"] == "tam-process" and existing(c)]
    async with get_client() as client:
        for config in wanted:
            flow_name = config["entrypoint"].rsplit(":", 1)[1].replace("_", "-")
            deployment = await client.read_deployment_by_name(f"{flow_name}/tam-process")
            assert deployment.work_pool_name == "tam-process"
            assert deployment.entrypoint == config["entrypoint"]
            assert bool(deployment.schedules) == bool(config.get("schedules"))
            # Resolved on the worker at run time, not baked in at deploy time.
            (pull,) = deployment.pull_steps or []
            directory = pull["prefect.deployments.steps.set_working_directory"]["directory"]
            assert directory == "{{ $TAM_PROJECT_DIR }}"
            # The names of the blocks travel; their values do not.
            job_env = (deployment.job_variables or {}).get("env") or {}
            assert job_env.get("TAM_DATABASE_URL_BLOCK") == "tam-database-url"
            assert not set(job_env) & set(secret_env_names())

        # One real run: a process worker whose environment has no key and no database URL.
        store = open_store(secret_blocks["tam-database-url"])
        await store.init_schema()
        project_id, job_id = await seed_project(store, 6)
        await store.close()
        emulator_control.configure("anthropic", valid_keys=[secret_blocks["anthropic-api-key"]])
        qualify = await client.read_deployment_by_name("qualify-companies/tam-process")
        run = await client.create_flow_run_from_deployment(
            qualify.id, parameters={"project_id": str(project_id), "job_id": str(job_id)}
        )
        worker_env = {
            **_cli_env(prefect_server, tmp_path / "worker-home"),
            **{k: v for k, v in env_for(emulators).items() if k.endswith("_BASE_URL")},
            "TAM_PROJECT_DIR": str(ROOT),
            "TAM_DATA_DIR": str(tmp_path / "data"),
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        worker_log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", "tam-process", "--type", "process"],
            cwd=tmp_path, env=worker_env, stdout=worker_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            state = None
            deadline = asyncio.get_running_loop().time() + 240
            while asyncio.get_running_loop().time() < deadline:
                state = (await client.read_flow_run(run.id)).state
                if state is not None and state.is_final():
                    break
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                await asyncio.sleep(0.5)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)
            worker_log.close()
        worker_output = (tmp_path / "worker.log").read_text()
        assert state is not None and state.is_completed(), (state, worker_output[-3000:])
        assert not _leaks(worker_output, secret_blocks)

    # The flow wrote to the block's database, with the block's key.
    store = open_store(secret_blocks["tam-database-url"])
    try:
        job = await store.get_job(job_id)
    finally:
        await store.close()
    assert job.status == JobStatus.completed and job.flow_run_id == run.id, job
    stats = emulator_control.stats("anthropic", latencies=False)
    assert stats["status_counts"].get("200", 0) >= 6 and "401" not in stats["status_counts"]

    # Everything Prefect keeps that a reader of deployments, pools and runs can see.
    for resource in ("deployments", "work_pools", "flow_runs", "logs", "artifacts"):
        text = _api_json(prefect_server.api_url, resource)
        assert not _leaks(text, secret_blocks), resource
    assert str(run.id) in _api_json(prefect_server.api_url, "flow_runs")


async def test_the_docker_flavour_would_store_no_secret_either(
    secret_blocks: dict[str, str],
) -> None:
    """What `prefect deploy -n '*/tam'` stores, without the Docker engine its build needs.

    These are the resolutions deploy applies to a deployment's config before it saves it
    (Secret-block references, Prefect variables, then the environment), run against the
    server that holds the blocks.
    """
    from prefect.utilities.templating import (
        apply_values,
        resolve_block_document_references,
        resolve_variables,
    )

    docker = [c for c in deployments() if c["work_pool"]["name"] == "tam-docker"]
    assert docker
    for config in docker:
        resolved = await resolve_block_document_references(copy.deepcopy(config))
        resolved = await resolve_variables(resolved)
        resolved = apply_values(resolved, os.environ, remove_notset=False)
        text = repr(resolved["work_pool"]["job_variables"])
        assert not _leaks(text, secret_blocks), config["entrypoint"]
        env = resolved["work_pool"]["job_variables"]["env"]
        assert env["TAM_DATABASE_URL_BLOCK"] == "tam-database-url"


def test_the_environment_outranks_a_secret_source(monkeypatch: pytest.MonkeyPatch) -> None:
    from tam.settings import get_settings, set_secret_source

    asked: list[list[str]] = []

    def source(names: Any) -> dict[str, str]:
        asked.append(list(names))
        return {"ANTHROPIC_API_KEY": "from-source", "HUNTER_API_KEY": "from-source"}

    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-env")
    monkeypatch.delenv("HUNTER_API_KEY", raising=False)
    set_secret_source(source)
    try:
        settings = get_settings()
    finally:
        # tasks/secrets.py is the session's source again.
        from orchestration.secrets import install

        install()
    anthropic_key, hunter_key = (settings.provider(p).api_key for p in ("anthropic", "hunter"))
    assert anthropic_key is not None and hunter_key is not None
    assert anthropic_key.get_secret_value() == "from-env"
    assert hunter_key.get_secret_value() == "from-source"
    (names,) = asked
    assert "HUNTER_API_KEY" in names and "ANTHROPIC_API_KEY" not in names


async def test_a_named_block_fills_an_unset_key_and_a_missing_one_is_named(
    secret_blocks: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestration.secrets import SecretBlockError
    from tam.settings import get_settings

    monkeypatch.delenv("PROSPEO_API_KEY", raising=False)
    monkeypatch.setenv("PROSPEO_API_KEY_BLOCK", "prospeo-api-key")
    get_settings.cache_clear()
    try:
        key = get_settings().provider("prospeo").api_key
        assert key is not None and key.get_secret_value() == secret_blocks["prospeo-api-key"]
        monkeypatch.setenv("PROSPEO_API_KEY_BLOCK", "no-such-block")
        get_settings.cache_clear()
        with pytest.raises(SecretBlockError, match="PROSPEO_API_KEY_BLOCK.*'no-such-block'"):
            get_settings()
    finally:
        monkeypatch.delenv("PROSPEO_API_KEY_BLOCK")
        get_settings.cache_clear()
