"""Google Places API (New) Text Search: local businesses as candidate companies.

Every request carries ``X-Goog-FieldMask`` (the API answers 400 without one and returns only
the masked fields, ``nextPageToken`` included). Pages hold at most 20 places and a query at
most 60; a fresh page token is used only after a short wait, as the API requires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
from pydantic import BaseModel, ConfigDict, Field

from tam.clients._base import ProviderClient
from tam.clients._http import map_status, retry_after_seconds
from tam.domains import normalize_domain
from tam.errors import AuthFailed, InvalidRequest, OutOfCredits, ProviderError, RateLimited
from tam.models import NewCompany, Usage
from tam.providers import PROVIDERS

if TYPE_CHECKING:
    from tam.providers import ProviderSettings

PROVIDER = "google_places"
MAX_PAGE_SIZE = 20
MAX_RESULTS = 60  # the most one text query can page through
DEFAULT_FIELD_MASK = ",".join(
    [
        f"places.{name}"
        for name in (
            "id",
            "displayName",
            "formattedAddress",
            "websiteUri",
            "nationalPhoneNumber",
            "internationalPhoneNumber",
            "types",
            "primaryType",
            "businessStatus",
            "googleMapsUri",
            "location",
            "rating",
            "userRatingCount",
        )
    ]
    + ["nextPageToken"]
)
# Text Search Enterprise SKU (websiteUri and phone numbers are Enterprise fields), per request.
DEFAULT_PRICE_PER_REQUEST_USD = PROVIDERS[PROVIDER].prices["google_places_request_usd"]
DEFAULT_PAGE_TOKEN_WAIT_S = 0.3
PAGE_TOKEN_RETRIES = 3
# Hosts shared by many businesses: a place "website" there is not the company's own domain.
SHARED_HOSTS = (
    "facebook.com",
    "instagram.com",
    "linktr.ee",
    "yelp.com",
    "google.com",
    "twitter.com",
    "x.com",
    "linkedin.com",
    "tiktok.com",
    "youtube.com",
    "nextdoor.com",
    "goo.gl",
    "bit.ly",
)


class LocalizedText(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")

    text: str = ""
    language_code: str | None = Field(default=None, alias="languageCode")


class LatLng(BaseModel):
    latitude: float
    longitude: float


class Place(BaseModel):
    """One place of a Text Search answer; only the masked fields are set."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    id: str | None = None
    display_name: LocalizedText | None = Field(default=None, alias="displayName")
    formatted_address: str | None = Field(default=None, alias="formattedAddress")
    website_uri: str | None = Field(default=None, alias="websiteUri")
    national_phone_number: str | None = Field(default=None, alias="nationalPhoneNumber")
    international_phone_number: str | None = Field(default=None, alias="internationalPhoneNumber")
    types: list[str] = Field(default_factory=list)
    primary_type: str | None = Field(default=None, alias="primaryType")
    business_status: str | None = Field(default=None, alias="businessStatus")
    google_maps_uri: str | None = Field(default=None, alias="googleMapsUri")
    location: LatLng | None = None
    rating: float | None = None
    user_rating_count: int | None = Field(default=None, alias="userRatingCount")

    @property
    def name(self) -> str:
        return self.display_name.text if self.display_name else ""


class _SearchTextResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")

    places: list[Place] = Field(default_factory=list)  # absent when nothing matched
    next_page_token: str | None = Field(default=None, alias="nextPageToken")


class PlacesPage(BaseModel):
    places: list[Place]
    next_page_token: str | None = None
    usage: Usage


def website_domain(uri: str | None) -> str | None:
    """The company domain of a place's website; None for social pages and link hubs."""
    domain = normalize_domain(uri)
    if domain is None or any(domain == h or domain.endswith("." + h) for h in SHARED_HOSTS):
        return None
    return domain


def to_new_company(project_id: UUID, place: Place) -> NewCompany:
    """A place as a pending company of the project (no website: no domain, kept anyway)."""
    kind = place.primary_type or next(
        (t for t in place.types if t not in ("point_of_interest", "establishment")), None
    )
    return NewCompany(
        project_id=project_id,
        name=place.name or place.formatted_address or place.id or "Unnamed place",
        domain=website_domain(place.website_uri),
        source=PROVIDER,
        industry=kind.replace("_", " ").title() if kind else None,
        location=place.formatted_address,
        raw_data=place.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


class GooglePlacesClient(ProviderClient):
    """Text Search (New). Raises the `tam.errors` tree; `usage` sums every request made."""

    provider = PROVIDER

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        field_mask: str = DEFAULT_FIELD_MASK,
        page_token_wait_s: float = DEFAULT_PAGE_TOKEN_WAIT_S,
        price_per_request_usd: float = DEFAULT_PRICE_PER_REQUEST_USD,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if "nextPageToken" not in field_mask and field_mask.strip() != "*":
            # Without it the API silently stops after the first page.
            field_mask = f"{field_mask},nextPageToken"
        self.field_mask = field_mask
        self.page_token_wait_s = page_token_wait_s
        self.price_per_request_usd = price_per_request_usd
        self._sleep = sleep
        super().__init__(
            api_key=api_key, base_url=base_url, timeout=timeout, http_client=http_client
        )

    @classmethod
    def settings_arguments(cls, block: ProviderSettings) -> dict[str, Any]:
        return {"price_per_request_usd": block.prices["google_places_request_usd"]}

    def auth(self, api_key: str) -> tuple[dict[str, str], dict[str, str]]:
        return {"X-Goog-Api-Key": api_key, "X-Goog-FieldMask": self.field_mask}, {}

    def map_status(self, response: httpx.Response) -> ProviderError | None:
        """Google's error body (reasons, status words) refines the HTTP status."""
        return None if response.status_code == 200 else _error(response)

    async def search_text(
        self,
        query: str,
        *,
        page_token: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        region_code: str | None = None,
        location_bias: dict[str, Any] | None = None,
    ) -> PlacesPage:
        """One page of places for `query` (pass the previous page's token for the next)."""
        body: dict[str, Any] = {
            "textQuery": query,
            "pageSize": max(1, min(page_size, MAX_PAGE_SIZE)),
        }
        if region_code:
            body["regionCode"] = region_code
        if location_bias:
            body["locationBias"] = location_bias
        if page_token:
            body["pageToken"] = page_token
        response = await self._request("POST", "/v1/places:searchText", json_body=body)
        answer = self._http.parse(_SearchTextResponse, self._http.json(response))
        cost = Usage(provider=PROVIDER, credits=1, cost_usd=self.price_per_request_usd)
        self._add(cost)
        return PlacesPage(places=answer.places, next_page_token=answer.next_page_token, usage=cost)

    async def search_all(
        self,
        query: str,
        *,
        max_results: int = MAX_RESULTS,
        region_code: str | None = None,
        location_bias: dict[str, Any] | None = None,
    ) -> list[Place]:
        """Every place for `query`, following ``nextPageToken`` (at most 60, the API's cap)."""
        limit = min(max_results, MAX_RESULTS)
        places: dict[str, Place] = {}
        token: str | None = None
        issued = 0.0
        while len(places) < limit:
            size = min(MAX_PAGE_SIZE, limit - len(places))
            page = await self._page(query, token, issued, size, region_code, location_bias)
            for place in page.places:
                places.setdefault(place.id or f"#{len(places)}", place)
            if not page.next_page_token or not page.places:
                break
            token, issued = page.next_page_token, time.monotonic()
        return list(places.values())[:limit]

    async def _page(
        self,
        query: str,
        token: str | None,
        issued: float,
        size: int,
        region_code: str | None,
        location_bias: dict[str, Any] | None,
    ) -> PlacesPage:
        if token is None:
            return await self.search_text(
                query, page_size=size, region_code=region_code, location_bias=location_bias
            )
        # NOTE: a page token becomes valid a moment after it is issued; used too early the
        # API answers INVALID_ARGUMENT. Wait first, then back off a few times before believing
        # the token is really bad.
        wait = self.page_token_wait_s - (time.monotonic() - issued)
        for attempt in range(PAGE_TOKEN_RETRIES + 1):
            if wait > 0:
                await self._sleep(wait)
            try:
                return await self.search_text(
                    query,
                    page_token=token,
                    page_size=size,
                    region_code=region_code,
                    location_bias=location_bias,
                )
            except InvalidRequest:
                if attempt == PAGE_TOKEN_RETRIES:
                    raise
                wait = max(self.page_token_wait_s, 0.1) * 2 ** (attempt + 1)
        raise AssertionError("unreachable")

    def _add(self, usage: Usage) -> None:
        self._charge(usage.credits, usage.cost_usd)
        self.usage.cost_usd = round(self.usage.cost_usd, 6)


def _error(response: httpx.Response) -> ProviderError:
    """Google's ``{"error": {code, message, status, details}}`` → the `tam.errors` tree."""
    message, status, reasons = _google_error(response)
    text = f"{status}: {message}" if status and message else None
    kwargs: dict[str, Any] = {"provider": PROVIDER, "status_code": response.status_code}
    lowered = (message or "").lower()
    if "API_KEY_INVALID" in reasons or "api key not valid" in lowered:
        return AuthFailed(text or "API key not valid", **kwargs)
    if "BILLING_DISABLED" in reasons or "billing" in lowered:
        return OutOfCredits(text or "billing disabled", **kwargs)
    if response.status_code == 429 or status == "RESOURCE_EXHAUSTED":
        return RateLimited(
            text or "quota exceeded", retry_after=retry_after_seconds(response.headers), **kwargs
        )
    return map_status(PROVIDER, response, text)


def _google_error(response: httpx.Response) -> tuple[str | None, str | None, set[str]]:
    try:
        data = response.json()
    except ValueError:
        return None, None, set()  # an HTML page from a proxy: map_status quotes it
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None, set()
    details = error.get("details")
    if not isinstance(details, list):
        details = []
    reasons = {str(d.get("reason")) for d in details if isinstance(d, dict) and d.get("reason")}
    message = error.get("message")
    status = error.get("status")
    return (
        str(message) if message else None,
        str(status) if status else None,
        reasons,
    )
