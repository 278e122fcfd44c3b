"""A worker SIGKILLed mid-run, then the job dispatched again.

Each case kills a real worker process while the provider calls are in flight and the
results are still buffered (no hook, no `finally`, no flush can run), lets the reaper end
the orphaned job row, runs the same job again, and then checks the database against the
emulators' world and their per-item counters: every item processed, none twice, no row
duplicated, and no answer the dead worker had received bought a second time. Only calls
in flight at the kill (answered and billed by the provider, never received) may repeat.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import pytest

from flows.find_contacts import find_contacts
from flows.qualify import qualify_companies
from flows.reaper import reap_stale_jobs
from tam.clients.anthropic import build_prompt
from tam.clients.factory import hunter_client, neverbounce_client, prospeo_client
from tam.emulators import sample_companies
from tam.emulators.anthropic import expected_verdict
from tam.emulators.prospeo import location_matches
from tam.errors import Unavailable
from tam.journal import ResultJournal
from tam.models import NEEDS_REVIEW_PREFIX, ContactUpdate, IcpProfile, JobStatus
from tam.settings import get_settings
from tam.steps.contacts import HunterFind, SearchedGroup, WaterfallMemo, replay_journals
from tam.steps.email_waterfall import EmailLookup, find_email
from tam.stores.base import Store
from tests.helpers.seed import ICP, seed_project
from tests.reliability.helpers import (
    CONTACTS_ICP,
    WORLD,
    FlowWorker,
    all_companies,
    all_contacts,
    duplicates,
    paid_twice,
    seed_qualified,
    wait_for_job,
)
from tests.reliability.plugin import Tally

pytestmark = [pytest.mark.reliability, pytest.mark.prefect]

_STATUS_OF = {"qualified": "qualified", "disqualified": "disqualified", "needs_review": "pending"}
PROSPEO_SENIORITY = {"C-Suite": "C-Suite", "VP": "Vice President", "Director": "Director"}


async def kill_and_reap(store: Store, worker: FlowWorker, job_id: Any, tally: Tally) -> None:
    """SIGKILL the worker, check nothing ended its row, then let the reaper end it."""
    worker.kill()
    tally.fault("worker SIGKILL")
    assert (await store.get_job(job_id)).status == JobStatus.running  # no hook could run
    await asyncio.sleep(1.5)  # the heartbeat is 0.3 s: 1 s of silence means dead
    reaped = await reap_stale_jobs(stale_after_s=1)
    assert str(job_id) in reaped["jobIds"]
    killed = await store.get_job(job_id)
    assert killed.status == JobStatus.failed and killed.completed_at is not None
    assert "no heartbeat" in (killed.result_summary or {})["error"]


async def test_qualify_killed_mid_run_resumes_without_paying_twice(
    prefect_server: Any,
    store: Store,
    emulator_control: Any,
    fast_heartbeat: None,
    tally: Tally,
    full: bool,
) -> None:
    n = 400 if full else 120
    emulator_control.configure("anthropic", latency_median_s=0.3, latency_sigma=0.3)
    project_id, job_id = await seed_project(store, n)
    worker = FlowWorker("flows.qualify.qualify_companies", project_id=project_id, job_id=job_id)
    try:
        # Mid-run: verdicts are arriving and most of them are still in the write buffer.
        await wait_for_job(store, job_id, lambda j: (j.done_count or 0) >= n // 4)
        await kill_and_reap(store, worker, job_id, tally)
    finally:
        worker.close()

    await qualify_companies(project_id=project_id, job_id=job_id)

    job = await store.get_job(job_id)
    assert job.status == JobStatus.completed and job.attempt == 2
    companies = await all_companies(store, project_id)
    paid = emulator_control.stats("anthropic", latencies=False)["success_by_item"]
    icp = IcpProfile.model_validate(ICP)
    wrong = [
        c.domain
        for c in companies
        if c.qualification_status
        != _STATUS_OF[expected_verdict(build_prompt(c, icp), seed=7, needs_review_pct=5)]
    ]
    unpaid = [c.domain for c in companies if not paid.get(c.domain or "")]
    twice = paid_twice(paid)
    dups = duplicates(c.domain for c in companies)
    tally.items(checked=n, lost=len(wrong) + len(unpaid), duplicates=len(dups))
    assert len(companies) == n and not dups
    assert not wrong, f"companies not in their expected state: {wrong[:5]}"
    assert not unpaid
    for company in companies:
        if company.qualification_status == "pending":
            assert (company.qualification_reason or "").startswith(NEEDS_REVIEW_PREFIX)
    # Only calls in flight at the kill can repeat: at most the account's limit (10).
    limit = get_settings().limit_for("anthropic").max_in_flight
    assert len(twice) <= limit and max(paid.values()) <= 2, twice


def expected_contacts(domains: list[str]) -> dict[str, dict[str, Any]]:
    """LinkedIn URL → person, for the people find_contacts should keep (world order)."""
    wanted = {PROSPEO_SENIORITY[s] for s in CONTACTS_ICP["seniorityPreference"]}
    keep: dict[str, dict[str, Any]] = {}
    for domain in domains:
        people = [
            p
            for p in WORLD.people(domain)
            if p["seniority"] in wanted and location_matches("United States #US", p["location"])
        ]
        keep.update((p["linkedin_url"], p) for p in people[: CONTACTS_ICP["contactsPerCompany"]])
    return keep


def email_stats(control: Any) -> dict[str, dict[str, int]]:
    """Successful (billed) calls per item of every email provider endpoint."""
    prospeo = control.stats("prospeo", latencies=False)["success_by_item"]
    return {
        "prospeo_enrich": {k: v for k, v in prospeo.items() if "/in/" in k},
        "hunter": control.stats("hunter", latencies=False)["success_by_item"],
        "neverbounce": control.stats("neverbounce", latencies=False)["success_by_item"],
    }


async def test_find_contacts_killed_mid_emails_resumes_without_buying_twice(
    prefect_server: Any,
    store: Store,
    emulator_control: Any,
    fast_heartbeat: None,
    tally: Tally,
    full: bool,
) -> None:
    n = 120 if full else 40
    for provider in ("prospeo", "hunter", "neverbounce"):
        emulator_control.configure(provider, latency_median_s=0.15, latency_sigma=0.3)
    project_id, job_id, rows = await seed_qualified(store, n)
    domains = [c.domain or "" for c in rows]
    expected = expected_contacts(domains)
    worker = FlowWorker("flows.find_contacts.find_contacts", project_id=project_id, job_id=job_id)
    try:
        # Mid-waterfall: some emails bought, most still in the update writer's buffer.
        await wait_for_job(
            store,
            job_id,
            lambda j: j.total_count and (j.done_count or 0) >= j.total_count - len(expected) + 15,
        )
        await kill_and_reap(store, worker, job_id, tally)
    finally:
        worker.close()
    before = email_stats(emulator_control)
    assert sum(before["prospeo_enrich"].values()) > 0

    summary = await find_contacts(project_id=project_id, job_id=job_id)

    job = await store.get_job(job_id)
    assert job.status == JobStatus.completed and job.attempt == 2
    contacts = await all_contacts(store, project_id)
    dups = duplicates(c.linkedin_url for c in contacts)
    missing = set(expected) - {c.linkedin_url for c in contacts}
    wrong = [
        c.linkedin_url
        for c in contacts
        if c.linkedin_url in expected
        and c.email_status
        != WORLD.expected_email(expected[c.linkedin_url]["domain"], expected[c.linkedin_url])[0]
    ]
    extra = {c.linkedin_url for c in contacts} - set(expected)
    after = email_stats(emulator_control)
    twice = {name: paid_twice(items) for name, items in after.items()}
    tally.items(
        checked=len(expected), lost=len(missing) + len(wrong), duplicates=len(dups) + len(extra)
    )
    assert not dups and not extra and not missing
    assert not wrong, f"contacts with a wrong email verdict: {wrong[:5]}"
    # The killed attempt had searched every company and bought some emails: its journal
    # gives both back, so the re-run buys no search page and none of those emails again.
    assert summary["searchPages"] == 0 and summary["companiesSearched"] == 0
    assert summary["resumedEmails"] > 0
    assert summary["emailsChecked"] + summary["resumedEmails"] >= len(expected)
    # Only lookups in flight at the kill may repeat: each provider's in-flight limit. A
    # Hunter find whose NeverBounce check was cut short is journaled too (WaterfallMemo),
    # so the re-run resumes that contact at NeverBounce instead of buying Hunter again.
    settings = get_settings()
    for name, items in twice.items():
        assert len(items) <= settings.limit_for(name).max_in_flight, (name, items)


async def test_a_hunter_find_cut_short_before_neverbounce_is_not_bought_again(
    store: Store, emulator_control: Any, tmp_path: Any, tally: Tally
) -> None:
    """The window the kill above hits only by chance, made certain: Hunter has answered,
    the worker dies before NeverBounce does. The re-run resumes at NeverBounce."""
    domain, person = next(
        (c["domain"], p)
        for c in sample_companies(100)
        for p in WORLD.people(c["domain"])
        if WORLD.email_outcome(c["domain"], p) == "hunter_catchall"
    )
    lookup = EmailLookup(
        first_name=person["first_name"], last_name=person["last_name"], domain=domain
    )
    settings = get_settings()
    clients = {
        "prospeo": prospeo_client(settings),
        "hunter": hunter_client(settings),
        "neverbounce": neverbounce_client(settings),
    }
    job_id = uuid4()

    def journals() -> tuple[Any, Any, Any]:
        return (
            ResultJournal(tmp_path, job_id, "find_contacts-search", SearchedGroup),
            ResultJournal(tmp_path, job_id, "find_contacts-emails", ContactUpdate),
            ResultJournal(tmp_path, job_id, "find_contacts-hunter", HunterFind),
        )

    try:
        first = journals()
        emulator_control.configure("neverbounce", error_rates={503: 1.0}, retry_after_s=0)
        tally.fault("worker stopped between Hunter and NeverBounce")
        with pytest.raises(Unavailable):
            await find_email(
                lookup, **clients, limiters={}, max_attempts=1, memo=WaterfallMemo(first[2])
            )
        for journal in first:
            journal.close(remove=False)  # what a killed worker leaves behind
        emulator_control.configure("neverbounce", error_rates={})
        hunter_before = emulator_control.stats("hunter", latencies=False)["success_by_item"]

        resumed = await replay_journals(store, *journals())
        memo = WaterfallMemo()
        memo.update(resumed.hunter_finds)
        outcome = await find_email(lookup, **clients, limiters={}, max_attempts=1, memo=memo)
    finally:
        for client in clients.values():
            await client.close()

    assert (outcome.email_status, outcome.source) == WORLD.expected_email(domain, person)
    assert outcome.email == person["email"]
    hunter_after = emulator_control.stats("hunter", latencies=False)["success_by_item"]
    assert hunter_after == hunter_before, "Hunter's find was bought a second time"
    assert sum(hunter_after.values()) == 1
