"""The per-contact email waterfall: Prospeo, then Hunter, then NeverBounce. No Prefect here.

Order and verdicts:
1. Prospeo enrich-person (verified emails only) → ``verified``, source prospeo. Cheapest
   verified answer, so it goes first; Hunter is never asked for these people.
2. Hunter email finder → nothing: ``not_found``. Hunter's own ``valid`` → ``verified``.
3. Otherwise NeverBounce: valid → ``verified``, catchall → ``catch_all``,
   invalid/disposable → ``invalid`` (the address stays in ``raw`` only, so nobody mails a
   bounce), unknown → ``found``.

A provider saying "I have nothing for this person" (NotFound, InvalidRequest) moves on down
the waterfall; for Hunter that includes a 404 miss and a 451 (the person claimed their data
or opted out): the contact ends `not_found`, the reason kept in `raw`. Systemic errors
propagate (fail the job); so does a retryable error that outlived `max_attempts` (the
contact keeps no status, and a re-run tries it again).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, Field

from tam.clients._retry import call_with_retries
from tam.clients.hunter import HunterClient, HunterEmail
from tam.clients.neverbounce import NeverBounceClient
from tam.clients.prospeo import EnrichedPerson, ProspeoClient
from tam.errors import InvalidRequest, NotFound
from tam.limiters import AccountLimiter

EmailStatus = Literal["verified", "catch_all", "invalid", "found", "not_found"]
_FROM_NEVERBOUNCE: dict[str, EmailStatus] = {
    "valid": "verified",
    "catchall": "catch_all",
    "invalid": "invalid",
    "disposable": "invalid",
    "unknown": "found",
}
T = TypeVar("T")


class ContactLike(Protocol):
    """What the waterfall needs to know about a contact (`EmailLookup` is one)."""

    @property
    def first_name(self) -> str | None: ...
    @property
    def last_name(self) -> str | None: ...
    @property
    def linkedin_url(self) -> str | None: ...
    @property
    def domain(self) -> str | None: ...


class EmailLookup(BaseModel):
    """A contact as the waterfall sees it: a name, a company domain, a LinkedIn profile."""

    first_name: str | None = None
    last_name: str | None = None
    linkedin_url: str | None = None
    domain: str | None = None


class EmailOutcome(BaseModel):
    """The waterfall's verdict for one contact; `raw` says what each provider answered."""

    email: str | None
    email_status: EmailStatus
    source: Literal["prospeo", "hunter"] | None
    raw: dict[str, Any] = Field(default_factory=dict)


def _clean(value: str | None) -> str | None:
    text = (value or "").strip()
    return text or None


async def find_email(
    contact_like: ContactLike,
    *,
    prospeo: ProspeoClient,
    hunter: HunterClient,
    neverbounce: NeverBounceClient,
    limiters: Mapping[str, AccountLimiter],
    max_attempts: int,
    memo: MutableMapping[str, tuple[Any, dict[str, Any] | None]] | None = None,
) -> EmailOutcome:
    """Run the waterfall for one contact (see the module docstring for the order).

    `memo` keeps each provider's answer for this contact across calls: a waterfall cut
    short (a later provider down, the task retried) resumes where it stopped instead of
    buying the earlier answers again.
    """
    first, last = _clean(contact_like.first_name), _clean(contact_like.last_name)
    domain, url = _clean(contact_like.domain), _clean(contact_like.linkedin_url)
    raw: dict[str, Any] = {}

    async def call(provider: str, make: Callable[[], Awaitable[T]]) -> T | None:
        memo_key = f"{provider}|{first}|{last}|{domain}|{url}"
        if memo is not None and memo_key in memo:
            answer, known = memo[memo_key]
            if known is not None:
                raw[provider] = known
            return answer  # type: ignore[no-any-return]
        # Prospeo budgets enrich separately from search (5/s vs 1/s on Starter): use an
        # enrich-specific limiter when the caller has one.
        limiter = limiters.get(f"{provider}_enrich") if provider == "prospeo" else None
        result: T | None = None
        note: dict[str, Any] | None = None
        try:
            result = await call_with_retries(
                make, limiter=limiter or limiters.get(provider), max_attempts=max_attempts
            )
        except (NotFound, InvalidRequest) as exc:
            note = raw[provider] = {"error": type(exc).__name__, "message": exc.message}
        if memo is not None:
            memo[memo_key] = (result, note)
        return result

    if url or (first and last and domain):
        enriched: EnrichedPerson | None = await call(
            "prospeo",
            lambda: prospeo.enrich_person(
                first_name=first, last_name=last, company_website=domain, linkedin_url=url
            ),
        )
        if enriched is not None:
            raw["prospeo"] = {
                "email": enriched.email,
                "email_status": "VERIFIED",
                "person_id": enriched.person.person_id,
                "free_enrichment": enriched.free_enrichment,
            }
            return EmailOutcome(
                email=enriched.email, email_status="verified", source="prospeo", raw=raw
            )
        raw.setdefault("prospeo", {"result": "no_match"})
    else:
        raw["prospeo"] = {"skipped": "needs a LinkedIn URL, or a name and a company domain"}

    if not (first and last and domain):
        raw["hunter"] = {"skipped": "needs a first name, a last name and a company domain"}
        return EmailOutcome(email=None, email_status="not_found", source=None, raw=raw)
    found: HunterEmail | None = await call(
        "hunter", lambda: hunter.find_email(domain=domain, first_name=first, last_name=last)
    )
    if found is None:
        raw.setdefault("hunter", {"result": "not_found"})
        return EmailOutcome(email=None, email_status="not_found", source=None, raw=raw)
    raw["hunter"] = {
        "email": found.email,
        "score": found.score,
        "verification_status": found.verification_status,
    }
    if found.verification_status == "valid":
        return EmailOutcome(email=found.email, email_status="verified", source="hunter", raw=raw)

    result = await call("neverbounce", lambda: neverbounce.verify(found.email))
    raw.setdefault("neverbounce", {"result": result})
    status = _FROM_NEVERBOUNCE.get(result or "unknown", "found")
    return EmailOutcome(
        email=None if status == "invalid" else found.email,
        email_status=status,
        source="hunter",
        raw=raw,
    )
