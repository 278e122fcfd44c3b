"""The webhook names a job's flow from the core (tam.models.JobType), never from `flows`:
importing the flows would load Prefect's engine and every provider client into the HTTP
service only to check a job type."""

from __future__ import annotations

import subprocess
import sys

from tam.models import FLOW_NAMES, JobType


def test_webhook_app_does_not_import_flows() -> None:
    probe = (
        "import sys\n"
        "import deployments.webhook.app, deployments.webhook.models\n"
        "loaded = sorted(m for m in sys.modules if m == 'flows' or m.startswith('flows.'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == ""


def test_flow_names_agree_with_flows() -> None:
    from flows import FLOWS

    assert set(FLOWS) == {job_type.value for job_type in JobType} == set(FLOW_NAMES)
    assert {job_type: flow.name for job_type, flow in FLOWS.items()} == {
        job_type.value: job_type.flow_name for job_type in JobType
    }
