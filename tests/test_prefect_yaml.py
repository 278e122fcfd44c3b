"""prefect.yaml, read by Prefect's own loader: every deployment resolves, imports and fits.

Flows another change has not added yet (their module is missing) are the only ones not
imported; everything that exists is checked, and every served flow must be deployed.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml
from rich.console import Console

from deployments.serve import DEPLOYMENT_NAME
from deployments.webhook.dispatch import run_spec

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"
DOCKERFILE = ROOT / "deployments" / "Dockerfile"
FLAVOURS = {DEPLOYMENT_NAME: "tam-docker", "tam-process": "tam-process"}
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|DATABASE_URL|_DSN)$", re.IGNORECASE)
LITERAL_SECRET = re.compile(
    r"sk-ant-|sb_secret_|eyJ[A-Za-z0-9_-]{10,}\.|://[^/\s:@]+:[^@\s{]+@|AKIA[0-9A-Z]{16}"
)


@cache
def loaded() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from prefect.cli.deploy._config import _load_deploy_configs_and_actions

    return _load_deploy_configs_and_actions(PREFECT_YAML, console=Console(quiet=True))


def deployments() -> list[dict[str, Any]]:
    return loaded()[0]


def existing(config: dict[str, Any]) -> bool:
    return (ROOT / config["entrypoint"].split(":")[0]).is_file()


def load_flow(entrypoint: str) -> Any:
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(ROOT / entrypoint))


def config_id(config: dict[str, Any]) -> str:
    return f"{config['name']}:{config['entrypoint'].rsplit(':', 1)[1]}"


def walk_strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in walk_strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in walk_strings(v, f"{path}[{i}]")]
    return [(path, value)] if isinstance(value, str) else []


def test_prefects_schema_accepts_the_file_as_written() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    # The CLI's loader only warns on a schema error and drops every deployment; be strict.
    model = PrefectYamlModel.model_validate(yaml.safe_load(PREFECT_YAML.read_text()))
    assert len(model.deployments) == len(deployments()) > 0
    assert all(c.get("entrypoint") and c.get("description") for c in deployments())


def test_every_served_flow_is_deployed_in_both_flavours() -> None:
    from flows import FLOWS, SERVED_FLOWS

    flows = {flow for flow, _ in SERVED_FLOWS} | set(FLOWS.values())
    for flow in flows:
        module = inspect.getmodule(flow.fn)
        assert module is not None and module.__file__ is not None
        entrypoint = f"{Path(module.__file__).relative_to(ROOT).as_posix()}:{flow.fn.__name__}"
        for name, pool in FLAVOURS.items():
            matches = [
                c for c in deployments() if c["entrypoint"] == entrypoint and c["name"] == name
            ]
            assert len(matches) == 1, f"{entrypoint} needs one {name!r} deployment"
            assert matches[0]["work_pool"]["name"] == pool


def test_each_flavour_deploys_each_flow_once() -> None:
    for name in FLAVOURS:
        entrypoints = [c["entrypoint"] for c in deployments() if c["name"] == name]
        assert len(entrypoints) == len(set(entrypoints))
    assert {c["name"] for c in deployments()} == set(FLAVOURS)


@pytest.mark.parametrize("config", [c for c in deployments() if existing(c)], ids=config_id)
def test_entrypoint_imports_and_parameters_fit_the_signature(config: dict[str, Any]) -> None:
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    flow = load_flow(config["entrypoint"])
    # `prefect deploy -n <flow-name>/<name>` matches the entrypoint's function name.
    assert flow.name == config["entrypoint"].rsplit(":", 1)[1].replace("_", "-")
    signature = inspect.signature(flow.fn)
    given = dict(config.get("parameters") or {})
    assert set(given) <= set(signature.parameters), "prefect.yaml names unknown parameters"
    flow.validate_parameters(given | _required_placeholders(signature, given))

    schedules = config.get("schedules") or []
    for schedule in schedules:
        params = given | schedule.get("parameters", {})
        assert set(params) <= set(signature.parameters)
        missing = [
            name
            for name, p in signature.parameters.items()
            if p.default is inspect.Parameter.empty and name not in params
        ]
        assert not missing, f"a scheduled run would lack {missing}"
        flow.validate_parameters(params)
        DeploymentScheduleCreate(**_schedule_config_to_deployment_schedule(schedule))


def _required_placeholders(signature: inspect.Signature, given: dict[str, Any]) -> dict[str, Any]:
    # Step flows take the ids from each run (the webhook); check their types with real ones.
    values: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if param.default is inspect.Parameter.empty and name not in given:
            values[name] = str(uuid4())
    return values


@pytest.mark.parametrize("config", [c for c in deployments() if existing(c)], ids=config_id)
def test_what_the_webhook_sends_is_valid_for_the_flow(config: dict[str, Any]) -> None:
    from flows import FLOWS

    flow = load_flow(config["entrypoint"])
    job_types = [job_type for job_type, f in FLOWS.items() if f.name == flow.name]
    for job_type in job_types:
        spec = run_spec(
            flow.name, job_type, project_id=uuid4(), job_id=uuid4(), previous_run_id=None
        )
        assert spec.deployment == f"{flow.name}/{DEPLOYMENT_NAME}"
        flow.validate_parameters(spec.parameters)


def test_scheduled_flows_match_what_tam_serve_schedules() -> None:
    from flows import SERVED_FLOWS

    for flow, extra in SERVED_FLOWS:
        if "cron" not in extra:
            continue
        for config in deployments():
            if config["entrypoint"].endswith(f":{flow.fn.__name__}"):
                crons = [s.get("cron") for s in config.get("schedules") or []]
                assert crons == [extra["cron"]], config["name"]
    scheduled = {c["entrypoint"].rsplit(":", 1)[1] for c in deployments() if c.get("schedules")}
    assert scheduled == {"refine_all_projects", "reap_stale_jobs"}


def test_steps_exist_and_take_the_arguments_given() -> None:
    from prefect.utilities.importtools import import_object

    for config in deployments():
        for section in ("build", "push", "pull"):
            for step in config.get(section) or []:
                ((function, kwargs),) = step.items()
                target = import_object(function)
                arguments = {k: v for k, v in kwargs.items() if k not in ("id", "requires")}
                inspect.signature(target).bind(**arguments)
        if config["work_pool"]["name"] == "tam-docker":
            build = config["build"][0]["prefect_docker.deployments.steps.build_docker_image"]
            assert (ROOT / build["dockerfile"]) == DOCKERFILE
            assert config["work_pool"]["job_variables"]["image"] == "{{ build-image.image }}"
            (pull,) = config["pull"]
            workdir = pull["prefect.deployments.steps.set_working_directory"]["directory"]
            assert f"WORKDIR {workdir}" in DOCKERFILE.read_text()
        else:
            assert config["build"] == [] and config["push"] == []


def test_job_variables_name_secret_blocks_never_values() -> None:
    from orchestration.secrets import BLOCK_SUFFIX
    from tam.settings import secret_env_names

    assert not LITERAL_SECRET.search(PREFECT_YAML.read_text())
    named = 0
    for config in deployments():
        for path, value in walk_strings(config):
            assert not LITERAL_SECRET.search(value), path
            # `prefect deploy` resolves these and stores the value in the deployment.
            assert "prefect.blocks.secret" not in value, path
        env = config["work_pool"]["job_variables"].get("env") or {}
        for name, value in env.items():
            assert not SECRET_NAME.search(name), f"{config_id(config)}: {name} holds a value"
            if name.endswith(BLOCK_SUFFIX):
                named += 1
                assert name.removesuffix(BLOCK_SUFFIX) in secret_env_names(), name
                assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", value), f"{name}: a block name"
        # Every flow run reaches the job database, in both flavours.
        assert env.get("TAM_DATABASE_URL_BLOCK") == "tam-database-url", config_id(config)
    assert named > len(deployments())


def test_dockerfile_is_well_formed() -> None:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    instructions = [line.split()[0].upper() for line in lines]
    known = {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "EXPOSE", "CMD", "ARG", "LABEL"}
    assert set(instructions) <= known and instructions[0] == "FROM"
    assert lines[0] == "FROM python:3.11-slim"
    assert any("-c constraints.txt" in line for line in lines if line.startswith("RUN"))
    for line in lines:
        if line.startswith("COPY"):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"COPY source {source} is missing"
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for private in (".env", ".venv", ".tam", ".git"):
        assert private in ignored
    assert "USER tam" in lines  # flow runs do not run as root


def test_dockerfile_copies_what_the_image_runs() -> None:
    # The image's CMD is the `tam` console script (the webhook); the local servers and the
    # demo (local/) stay out of the production image.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    script_package = project["scripts"]["tam"].split(":")[0].split(".")[0]
    copied = {
        line.split()[1]
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("COPY") and len(line.split()) == 3
    }
    assert {"tam", "flows", "tasks", "deployments", script_package} <= copied
    assert "local" not in copied
