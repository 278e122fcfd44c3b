"""`tam run`: unknown or malformed ids end in one clear line on stderr, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from tam.models import Project
from tam.stores.base import Store

ROOT = Path(__file__).resolve().parents[1]


def tam_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "run", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0], lines[0]


async def test_unknown_project_is_one_line_and_no_job_row(
    tam_env: dict[str, str], store: Store
) -> None:
    missing = uuid4()
    result = tam_run(tam_env, "qualify", "--project", str(missing))
    assert_one_clear_line(result, str(missing), "does not exist")
    assert result.returncode == 1
    assert [j for j in await store.list_jobs() if j.project_id == missing] == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--project", "not-a-uuid"], ["--project", "not-a-uuid", "not a valid id"]),
        (["--project", str(uuid4()), "--job", "12"], ["--job", "'12'", "not a valid id"]),
    ],
)
async def test_malformed_ids_are_one_line(
    tam_env: dict[str, str], store: Store, args: list[str], words: list[str]
) -> None:
    assert_one_clear_line(tam_run(tam_env, "qualify", *args), *words)


async def test_a_job_of_another_project_is_one_line(tam_env: dict[str, str], store: Store) -> None:
    mine, theirs = uuid4(), uuid4()
    for project_id in (mine, theirs):
        await store.create_project(Project(id=project_id, name="p", icp_profile={}))
    job = await store.create_job(theirs, "qualify")
    result = tam_run(tam_env, "qualify", "--project", str(mine), "--job", str(job.id))
    assert_one_clear_line(result, str(job.id), "belongs to project", str(theirs))
    assert (await store.get_job(job.id)).status.value == "pending"  # untouched


def test_unknown_step_is_one_line(tam_env: dict[str, Any]) -> None:
    assert_one_clear_line(
        tam_run(tam_env, "bogus", "--project", str(uuid4())), "unknown step 'bogus'"
    )
