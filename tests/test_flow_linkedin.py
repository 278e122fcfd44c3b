"""check-linkedin end to end: the Bright Data posts dataset the real way, through the flow.

Which posts each profile has comes from the emulator's world (`posts_for`), so every
contact's newest post, and so its activity, is predicted here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from flows.check_linkedin import check_linkedin
from tam.emulators import World, sample_companies
from tam.emulators.brightdata import is_dead_profile, posts_for
from tam.models import Contact, JobStatus, NewCompany, NewContact, Project
from tam.settings import get_settings
from tam.stores.base import Store

pytestmark = pytest.mark.prefect

WORLD = World(7)


@pytest.fixture(autouse=True)
def quick_polls(tam_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAM_BRIGHTDATA_POLL_INTERVAL_S", "0.05")
    monkeypatch.setenv("TAM_BRIGHTDATA_PROFILES_PER_SNAPSHOT", "25")
    get_settings.cache_clear()


async def seed(store: Store, companies: int) -> tuple[UUID, list[str]]:
    """A project with every person of its companies as a contact (plus one without URL)."""
    project_id = uuid4()
    await store.create_project(Project(id=project_id, name="linkedin", icp_profile={}))
    rows = await store.upsert_companies(
        [NewCompany(project_id=project_id, **c) for c in sample_companies(companies)]
    )
    contacts = [
        NewContact(
            project_id=project_id,
            company_id=row.id,
            first_name=p["first_name"],
            linkedin_url=p["linkedin_url"],
        )
        for row in rows
        for p in WORLD.people(row.domain or "")
    ]
    if rows:
        contacts.append(
            NewContact(
                project_id=project_id, company_id=rows[0].id, linkedin_url="", first_name="X"
            )
        )
    await store.upsert_contacts(contacts)
    return project_id, [c.linkedin_url for c in contacts if c.linkedin_url]


def newest_post(url: str, since: datetime) -> datetime | None:
    if is_dead_profile(url, world=WORLD, rate=0.05):
        return None
    dates = [
        datetime.fromisoformat(p["date_posted"].replace("Z", "+00:00"))
        for p in posts_for(url, datetime.now(UTC).date(), world=WORLD)
    ]
    dates = [d for d in dates if d >= since]
    return max(dates) if dates else None


async def contacts_of(store: Store, project_id: UUID) -> dict[str, Contact]:
    return {c.linkedin_url: c async for page in store.iter_contacts(project_id) for c in page}


async def test_activity_as_the_world_predicts_then_rerun_skips_unless_forced(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    emulator_control.configure("brightdata", snapshot_ready_s=0.3)
    project_id, urls = await seed(store, 12)
    job = await store.create_job(project_id, "check_linkedin")
    started = datetime.now(UTC)

    summary = await check_linkedin(project_id=project_id, job_id=job.id)

    stats = emulator_control.stats("brightdata", latencies=False)
    batches = -(-len(urls) // 25)
    assert batches > 1
    calls = stats["calls_by_endpoint"]
    assert calls["trigger"] == batches == summary["snapshots"]
    assert calls["progress"] > batches  # polled while the snapshots were running
    assert calls["snapshot"] == batches
    assert stats["profiles_triggered"] == len(urls)

    contacts = await contacts_of(store, project_id)
    assert contacts[""].linkedin_checked_at is None  # no URL: never sent
    active = 0
    for url in urls:
        contact = contacts[url]
        newest = newest_post(url, started - timedelta(days=90))
        is_active = newest is not None and newest >= started - timedelta(days=30)
        active += is_active
        assert contact.linkedin_active is is_active, url
        assert contact.linkedin_last_post_date == newest, url
        assert contact.linkedin_checked_at is not None
        assert contact.linkedin_checked_at >= started - timedelta(seconds=1)
    assert 0 < active < len(urls)
    assert (summary["active"], summary["inactive"], summary["total"]) == (
        active,
        len(urls) - active,
        len(urls),
    )
    assert summary["unreachable"] > 0  # some profiles are gone: inactive, not an error
    assert summary["usage"]["brightdata"]["credits"] == stats["records_delivered"] > 0
    assert (await store.get_job(job.id)).status == JobStatus.completed

    again = await check_linkedin(project_id=project_id)
    assert again["total"] == 0
    assert emulator_control.stats("brightdata", latencies=False)["calls_by_endpoint"] == calls

    forced = await check_linkedin(project_id=project_id, force=True)
    assert forced["total"] == len(urls) and forced["active"] == active
    after = emulator_control.stats("brightdata", latencies=False)["calls_by_endpoint"]
    assert after["trigger"] == 2 * batches


async def test_failed_snapshots_are_retried_then_reported(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    emulator_control.configure("brightdata", snapshot_ready_s=0.1, snapshot_fail_rate=0.6)
    project_id, urls = await seed(store, 25)
    batches = -(-len(urls) // 25)

    summary = await check_linkedin(project_id=project_id)

    triggers = emulator_control.stats("brightdata", latencies=False)["calls_by_endpoint"]
    assert triggers["trigger"] > batches  # failed snapshots were triggered again
    assert summary["total"] + summary["failed"] == len(urls)
    assert summary["snapshots"] + summary["failedSnapshots"] == batches
    checked = [c for c in (await contacts_of(store, project_id)).values() if c.linkedin_checked_at]
    assert len(checked) == summary["total"]


async def test_snapshot_failing_every_time_fails_the_job_naming_bright_data(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    emulator_control.configure("brightdata", snapshot_ready_s=0.05, snapshot_fail_rate=1.0)
    project_id, _ = await seed(store, 2)
    job = await store.create_job(project_id, "check_linkedin")

    state = await check_linkedin(project_id=project_id, job_id=job.id, return_state=True)

    assert state.is_failed()
    failed = await store.get_job(job.id)
    assert failed.status == JobStatus.failed
    error = (failed.result_summary or {})["error"]
    assert "brightdata" in error and "snapshot" in error
    # One batch, retried up to TAM_MAX_ATTEMPTS (4) times.
    calls = emulator_control.stats("brightdata", latencies=False)["calls_by_endpoint"]
    assert calls["trigger"] == 4
    assert all(
        c.linkedin_checked_at is None for c in (await contacts_of(store, project_id)).values()
    )


async def test_no_contacts_completes_at_once_with_zeros(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    project_id, _ = await seed(store, 0)
    job = await store.create_job(project_id, "check_linkedin")
    summary = await check_linkedin(project_id=project_id, job_id=job.id)
    assert (summary["active"], summary["inactive"], summary["total"]) == (0, 0, 0)
    assert (await store.get_job(job.id)).status == JobStatus.completed
    assert emulator_control.stats("brightdata", latencies=False)["calls"] == 0


async def test_a_retried_chunk_still_counts_every_contact_once(
    prefect_server: Any, store: Store, emulator_control: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from tam.errors import Unavailable
    from tam.steps import linkedin as step
    from tasks.chunks import chunk_task

    # NOTE: `flows.check_linkedin` the attribute is the flow; the module is in sys.modules.
    flow_module = importlib.import_module("flows.check_linkedin")

    # One chunk task pulling every batch; its first attempt writes one batch, then fails
    # transiently, so Prefect retries it and the retry skips what was already written.
    monkeypatch.setenv("TAM_MAX_TASK_RUNS", "1")
    get_settings.cache_clear()
    attempts: list[int] = []

    async def counted_chunk(run: Any, chunk: Any) -> Any:
        attempts.append(chunk.index)
        return await step.check_linkedin_chunk(run, chunk)

    monkeypatch.setattr(
        flow_module,
        "check_linkedin_task",
        chunk_task(
            counted_chunk, name="check-linkedin-posts", run_name="linkedin {chunk}"
        ).with_options(retry_delay_seconds=0),
    )
    real_batch = step.check_batch
    batches_done: list[int] = []

    async def flaky_batch(run: Any, batch: Any, tally: Any) -> None:
        await real_batch(run, batch, tally)
        batches_done.append(1)
        if len(batches_done) == 1:
            raise Unavailable("connection reset after the first batch", provider="brightdata")

    monkeypatch.setattr(step, "check_batch", flaky_batch)
    # One snapshot at a time: the failure cuts off no collection already bought.
    monkeypatch.setenv("TAM_LIMITS", '{"brightdata": {"max_in_flight": 1}}')
    get_settings.cache_clear()
    emulator_control.configure("brightdata", snapshot_ready_s=0.05)
    project_id, urls = await seed(store, 12)
    batches = -(-len(urls) // 25)
    assert batches > 2
    job = await store.create_job(project_id, "check_linkedin")

    summary = await check_linkedin(project_id=project_id, job_id=job.id)

    assert attempts == [0, 0]  # the chunk task really ran twice
    triggers = emulator_control.stats("brightdata", latencies=False)["calls_by_endpoint"]
    assert triggers["trigger"] == batches == summary["snapshots"]  # nothing bought twice
    contacts = await contacts_of(store, project_id)
    checked = [c for c in contacts.values() if c.linkedin_checked_at is not None]
    assert len(checked) == len(urls)
    active = sum(1 for c in checked if c.linkedin_active)
    assert summary["active"] + summary["inactive"] == summary["total"] == len(urls)
    assert summary["active"] == active
    finished = await store.get_job(job.id)
    assert finished.status == JobStatus.completed
    assert finished.result_summary == summary


async def test_only_linkedin_profile_urls_are_sent_the_rest_are_skipped_unbought(
    prefect_server: Any, store: Store, emulator_control: Any
) -> None:
    emulator_control.configure("brightdata", snapshot_ready_s=0.05)
    project_id = uuid4()
    await store.create_project(Project(id=project_id, name="urls", icp_profile={}))
    (row,) = await store.upsert_companies(
        [NewCompany(project_id=project_id, **c) for c in sample_companies(1)]
    )
    people = WORLD.people(row.domain or "")[:3]
    slugs = [p["linkedin_url"].rsplit("/", 1)[-1] for p in people]
    variants = [
        f"http://uk.linkedin.com/in/{slugs[0].upper()}/?trk=public_profile",
        f"linkedin.com/in/{slugs[1]}/",
        f"https://www.linkedin.com/in/{slugs[2]}/details/experience/",
    ]
    invalid = [
        "https://www.linkedin.com/company/acme",
        "https://example.com/in/jane-doe",
        "not a url at all",
        "https://www.linkedin.com/posts/jane_activity-123",
    ]
    await store.upsert_contacts(
        [
            NewContact(project_id=project_id, company_id=row.id, first_name="P", linkedin_url=u)
            for u in variants + invalid
        ]
    )

    summary = await check_linkedin(project_id=project_id)

    stats = emulator_control.stats("brightdata", latencies=False)
    assert stats["profiles_triggered"] == len(variants)
    assert stats.get("non_profile_inputs", 0) == 0
    assert stats.get("non_canonical_inputs", 0) == 0
    assert summary["invalidUrls"] == len(invalid)
    assert summary["total"] == len(variants) + len(invalid)
    contacts = await contacts_of(store, project_id)
    since = datetime.now(UTC) - timedelta(days=90)
    for url, person in zip(variants, people, strict=True):
        assert contacts[url].linkedin_last_post_date == newest_post(person["linkedin_url"], since)
    for url in invalid:
        assert contacts[url].linkedin_checked_at is not None
        assert contacts[url].linkedin_active is False
