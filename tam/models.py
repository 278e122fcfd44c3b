"""Domain models shared by stores, clients and flows (pydantic at every edge)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from tam.domains import normalize_domain
from tam.text import clean_json


class ProjectStatus(StrEnum):
    sourcing = "sourcing"
    qualifying = "qualifying"
    enriching = "enriching"
    complete = "complete"


class QualificationStatus(StrEnum):
    pending = "pending"
    qualified = "qualified"
    disqualified = "disqualified"


class JobStatus(StrEnum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.completed, JobStatus.failed, JobStatus.cancelled)


class JobType(StrEnum):
    source_companies = "source_companies"
    qualify = "qualify"
    find_contacts = "find_contacts"
    check_linkedin = "check_linkedin"
    refine_discolike = "refine_discolike"
    build_tam = "build_tam"

    @property
    def flow_name(self) -> str:
        """The Prefect flow that runs this job type (its deployments are `<flow>/<name>`)."""
        return FLOW_NAMES[self]


# NOTE: here, not read off the flows, so the webhook can name a deployment without importing
# Prefect's engine and every client; a test checks flows.FLOWS agrees.
FLOW_NAMES: dict[JobType, str] = {
    JobType.source_companies: "source-companies",
    JobType.qualify: "qualify-companies",
    JobType.find_contacts: "find-contacts",
    JobType.check_linkedin: "check-linkedin",
    JobType.refine_discolike: "refine-discolike",
    JobType.build_tam: "build-tam",
}


NEEDS_REVIEW_PREFIX = "Needs review"


class StoredModel(BaseModel):
    """A model whose values go to the database.

    Every string in it (nested JSON documents and their keys too) loses NUL and the other
    characters Postgres refuses before any field validator runs (tam.text): providers and
    scraped pages send them, and one of them used to fail a whole batch. A new model that
    goes to the store inherits this, so nothing has to remember it field by field.
    """

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        # NOTE: only raw input; a model instance passed in was cleaned when it was built.
        return clean_json(data) if isinstance(data, dict) else data


Seniority = Literal["C-Suite", "VP", "Director", "Manager", "Founder"]
Geography = Literal["us_only", "specific_countries", "global"]


class SourcingLimits(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    discolike_max_records: int = Field(default=200, ge=1, le=10_000, alias="discolikeMaxRecords")


class IcpProfile(BaseModel):
    """The ICP as the app stores it (camelCase JSON, every field optional)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", str_strip_whitespace=True)

    business_model: str | None = Field(default=None, alias="businessModel", max_length=5000)
    what_you_sell: str | None = Field(default=None, alias="whatYouSell", max_length=5000)
    industry_keywords: list[str] = Field(
        default_factory=list, alias="industryKeywords", max_length=200
    )
    employee_size_ranges: list[str] = Field(
        default_factory=list, alias="employeeSizeRanges", max_length=50
    )
    geography: Geography | None = None
    specific_countries: list[str] = Field(
        default_factory=list, alias="specificCountries", max_length=250
    )
    special_criteria: str | None = Field(default=None, alias="specialCriteria", max_length=5000)
    seniority_preference: list[Seniority] = Field(default_factory=list, alias="seniorityPreference")
    contacts_per_company: int = Field(default=1, ge=1, le=50, alias="contactsPerCompany")
    seed_company_domains: list[str] = Field(
        default_factory=list, alias="seedCompanyDomains", max_length=500
    )
    sourcing_limits: SourcingLimits = Field(default_factory=SourcingLimits, alias="sourcingLimits")

    @field_validator(
        "industry_keywords",
        "employee_size_ranges",
        "specific_countries",
        "seed_company_domains",
        "seniority_preference",
        mode="before",
    )
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("contacts_per_company", mode="before")
    @classmethod
    def _default_contacts(cls, value: Any) -> Any:
        return 1 if value is None else value

    @field_validator("sourcing_limits", mode="before")
    @classmethod
    def _default_limits(cls, value: Any) -> Any:
        return {} if value is None else value

    def countries(self) -> list[str]:
        """Countries to filter by, from `geography` (empty = no filter)."""
        if self.geography == "us_only":
            return ["US"]
        if self.geography == "specific_countries":
            return list(self.specific_countries)
        return []

    def seed_domains(self) -> list[str]:
        seen: dict[str, None] = {}
        for raw in self.seed_company_domains:
            domain = normalize_domain(raw)
            if domain:
                seen.setdefault(domain, None)
        return list(seen)


class Project(StoredModel):
    model_config = ConfigDict(extra="ignore")

    id: UUID
    name: str
    status: ProjectStatus = ProjectStatus.sourcing
    icp_profile: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    # The customer who owns the project and every row under it; None is nobody
    # (docs/contracts.md, "Tenancy and security").
    user_id: UUID | None = None

    def icp(self) -> IcpProfile:
        """Validated ICP; raises pydantic.ValidationError naming the bad field."""
        return IcpProfile.model_validate(self.icp_profile or {})


class NewCompany(StoredModel):
    """A company to insert (or merge) into a project; the store assigns the id."""

    model_config = ConfigDict(extra="ignore")

    project_id: UUID
    name: str
    domain: str | None = None
    linkedin_url: str | None = None
    source: str = "manual"
    industry: str | None = None
    employee_count: str | None = None
    location: str | None = None
    description: str | None = None
    digital_footprint_score: float | None = None
    similarity_score: float | None = None
    qualification_status: QualificationStatus = QualificationStatus.pending
    qualification_reason: str | None = None
    feedback: Literal["liked", "disliked"] | None = None
    raw_data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("domain", mode="before")
    @classmethod
    def _normalize(cls, value: Any) -> Any:
        return normalize_domain(value) if isinstance(value, str) else value

    @field_validator("employee_count", mode="before")
    @classmethod
    def _count_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class Company(NewCompany):
    id: UUID
    created_at: datetime | None = None


class QualificationResult(StoredModel):
    """What qualify writes back for one company."""

    company_id: UUID
    status: QualificationStatus
    reason: str
    raw: dict[str, Any] = Field(default_factory=dict)

    @property
    def needs_review(self) -> bool:
        return self.status == QualificationStatus.pending


class NewContact(StoredModel):
    model_config = ConfigDict(extra="ignore")

    project_id: UUID
    company_id: UUID
    first_name: str | None = None
    last_name: str | None = None
    title: str | None = None
    linkedin_url: str
    email: str | None = None
    email_status: str | None = None
    phone: str | None = None
    source: str = "prospeo"
    raw_data: dict[str, Any] = Field(default_factory=dict)
    linkedin_last_post_date: datetime | None = None
    linkedin_active: bool | None = None
    linkedin_checked_at: datetime | None = None


class Contact(NewContact):
    id: UUID
    created_at: datetime | None = None


class ContactUpdate(StoredModel):
    """A partial update of one contact; unset fields are left alone."""

    contact_id: UUID
    email: str | None = None
    email_status: str | None = None
    source: str | None = None
    raw_data: dict[str, Any] | None = None
    linkedin_last_post_date: datetime | None = None
    linkedin_active: bool | None = None
    linkedin_checked_at: datetime | None = None


class Job(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: UUID
    project_id: UUID
    job_type: str
    status: JobStatus = JobStatus.pending
    progress: int = 0
    result_summary: dict[str, Any] | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None
    flow_run_id: UUID | None = None
    current_step: str | None = None
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    done_count: int | None = None
    total_count: int | None = None
    cost_usd: float | None = None
    attempt: int = 0


class JobUpdate(StoredModel):
    """Fields a reporter may set on a job row; None means 'leave as is'."""

    status: JobStatus | None = None
    progress: int | None = Field(default=None, ge=0, le=100)
    result_summary: dict[str, Any] | None = None
    completed_at: datetime | None = None
    flow_run_id: UUID | None = None
    current_step: str | None = None
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    done_count: int | None = None
    total_count: int | None = None
    cost_usd: float | None = None
    attempt: int | None = None
    # Also empty result_summary and completed_at (a new attempt must not show the last
    # attempt's outcome); the same statement as the rest, so a start is one round trip.
    clear_result: bool = False
    # Also empty started_at: a new attempt queued for a worker is claimed by no run yet.
    clear_started: bool = False

    def changes(self, *, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        """The columns to set: every field that is not None, plus the emptied ones."""
        flags = {"clear_result", "clear_started"}
        values = self.model_dump(mode=mode, exclude_none=True, exclude=flags)
        if self.clear_result:
            values.update(result_summary=None, completed_at=None)
        if self.clear_started:
            values.update(started_at=None)
        return values


class Usage(BaseModel):
    """Tokens, credits and money one provider call consumed."""

    provider: str
    input_tokens: int = 0
    output_tokens: int = 0
    credits: float = 0.0
    cost_usd: float = 0.0

    @classmethod
    def zero(cls, provider: str) -> Usage:
        return cls(provider=provider)


# NOTE: kept for the REST/JSON boundary where some rows come back with camelCase keys.
COMPANY_ID_KEYS = AliasChoices("company_id", "companyId")
