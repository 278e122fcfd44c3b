"""Google Places API (New) Text Search emulator (``POST /v1/places:searchText``).

Real wire format: ``X-Goog-Api-Key`` (or ``?key=``), a REQUIRED ``X-Goog-FieldMask`` (400
INVALID_ARGUMENT without it; only masked fields come back, ``nextPageToken`` included only when
masked), ``pageSize`` up to 20, at most 60 results over 3 pages, page tokens that must be used
with the same parameters, are valid only after a short delay and expire. Errors are
``{"error": {"code", "message", "status", "details"}}``; a wrong key is 400 API_KEY_INVALID.

The places for a query are a pure function of its text and the world seed (:func:`places_for`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tam.emulators.base import (
    Call,
    EmulatedError,
    Endpoint,
    ErrorReason,
    ProviderEmulator,
    register_provider,
)
from tam.emulators.knobs import Knobs
from tam.emulators.world import World

MAX_PAGE_SIZE = 20
MAX_RESULTS = 60
# Response-level fields of SearchTextResponse, and Place fields a mask may name.
RESPONSE_FIELDS = {"places", "nextPageToken", "contextualContents", "routingSummaries", "searchUri"}
PLACE_FIELDS = set(
    """name id displayName types primaryType primaryTypeDisplayName nationalPhoneNumber
    internationalPhoneNumber formattedAddress shortFormattedAddress postalAddress
    addressComponents plusCode location viewport rating googleMapsUri googleMapsLinks websiteUri
    reviews regularOpeningHours currentOpeningHours utcOffsetMinutes timeZone photos
    adrFormatAddress businessStatus priceLevel priceRange attributions userRatingCount
    iconMaskBaseUri iconBackgroundColor takeout delivery dineIn reservable editorialSummary
    accessibilityOptions pureServiceAreaBusiness containingPlaces generativeSummary""".split()
)
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MASK_MISSING = (
    "FieldMask is a required parameter. See https://cloud.google.com/apis/docs/system-parameters "
    "on how to provide it. As an example, you can set the header 'X-Goog-FieldMask' to value "
    "'places.displayName', 'places.id' to ask for the display name and the place id of a place."
)
# (city, state, country, zip prefix, phone area code, latitude, longitude)
_CITIES = [
    ("Austin", "TX", "US", "787", "512", 30.267, -97.743),
    ("Denver", "CO", "US", "802", "303", 39.739, -104.990),
    ("Chicago", "IL", "US", "606", "312", 41.878, -87.630),
    ("Seattle", "WA", "US", "981", "206", 47.606, -122.332),
    ("Atlanta", "GA", "US", "303", "404", 33.749, -84.388),
    ("Phoenix", "AZ", "US", "850", "602", 33.448, -112.074),
    ("Boston", "MA", "US", "021", "617", 42.360, -71.059),
    ("Nashville", "TN", "US", "372", "615", 36.163, -86.781),
]
# A keyword in the query → the places' primaryType.
_TYPES = dict(
    pair.split("=")
    for pair in """plumb=plumber dent=dentist law=lawyer attorney=lawyer restaurant=restaurant
    pizza=restaurant cafe=cafe coffee=cafe bak=bakery gym=gym fitness=gym electric=electrician
    roof=roofing_contractor account=accounting realtor=real_estate_agency
    insur=insurance_agency salon=hair_salon vet=veterinary_care auto=car_repair
    hotel=lodging""".split()
)
_PREFIXES = (
    "Blue Sky|Summit|Lone Star|Riverbend|Oak Street|Metro|Pioneer|Golden Gate|Northside|Eastside|"
    "Heritage|Evergreen|Keystone|Liberty|Cornerstone|Redwood|Bluebonnet|Harbor|Main Street|Union"
).split("|")
_STREETS = (
    "Main St|Oak Ave|Congress Ave|Elm St|Lamar Blvd|Pine St|Broadway|2nd St|Market St|Cedar Rd|"
    "Lakeview Dr|Park Ave"
).split("|")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


class GooglePlacesKnobs(Knobs):
    # Seconds after a nextPageToken is issued before it may be used (too early: 400).
    page_token_delay_s: float = Field(default=0.1, ge=0)
    page_token_ttl_s: float = Field(default=300.0, gt=0)


def normalize_query(text: str) -> str:
    return " ".join(text.lower().split())


def places_for(query: str, *, world: World | None = None) -> list[dict[str, Any]]:
    """Every place a text query matches (all fields), best first: up to 60."""
    world = world or World()
    key = normalize_query(query)
    if not key:
        return []
    split = re.search(r"\s+(?:in|near)\s+", key)
    what, where = (key[: split.start()], key[split.end() :]) if split else (key, "")
    city = _city(where, world, key)
    u = world.unit(key, "places_count")
    count = MAX_RESULTS if u < 0.7 else 3 + int(56 * world.unit(key, "places_count_small"))
    noun = _noun(what)
    primary = next((t for k, t in _TYPES.items() if k in what), "point_of_interest")
    places: list[dict[str, Any]] = []
    names: set[str] = set()
    for index in range(count):
        rng = world.rng(key, "place", index)
        name = _name(rng.choice(_PREFIXES), noun, city[0], rng.random())
        while name in names:
            name = f"{name} {rng.choice(['II', 'West', 'East', 'North', 'South', 'Plus'])}"
        names.add(name)
        slug = re.sub(r"[^a-z0-9]+", "", name.lower())
        place: dict[str, Any] = {
            "name": "",
            "id": "ChIJ" + "".join(rng.choice(_ALPHABET) for _ in range(23)),
            "displayName": {"text": name, "languageCode": "en"},
            "types": [primary, "point_of_interest", "establishment"]
            if primary != "point_of_interest"
            else ["point_of_interest", "establishment"],
            "primaryType": primary,
            "formattedAddress": f"{rng.randint(100, 9899)} {rng.choice(_STREETS)}, {city[0]}, "
            f"{city[1]} {city[3]}{rng.randint(0, 99):02d}, USA",
            "nationalPhoneNumber": f"({city[4]}) 555-{rng.randint(100, 9999):04d}",
            "internationalPhoneNumber": f"+1 {city[4]}-555-{rng.randint(100, 9999):04d}",
            "location": {
                "latitude": round(city[5] + rng.uniform(-0.1, 0.1), 6),
                "longitude": round(city[6] + rng.uniform(-0.1, 0.1), 6),
            },
            "rating": round(rng.uniform(3.0, 5.0), 1),
            "userRatingCount": rng.randint(3, 2500),
            "businessStatus": "OPERATIONAL" if rng.random() > 0.05 else "CLOSED_TEMPORARILY",
        }
        place["name"] = f"places/{place['id']}"
        place["googleMapsUri"] = f"https://maps.google.com/?cid={rng.getrandbits(63)}"
        site = rng.random()
        if site < 0.70:
            place["websiteUri"] = f"https://www.{slug}.com/" + rng.choice(
                ["", "", "home", "?utm_source=gmb&utm_medium=organic"]
            )
        elif site < 0.76:
            place["websiteUri"] = f"https://www.facebook.com/{slug}"  # no website of its own
        elif site < 0.80 and places and "websiteUri" in places[0]:
            # A branch of a chain: another location, same company site.
            place["websiteUri"] = places[0]["websiteUri"].split("?")[0] + f"locations/{index}"
        places.append(place)
    return places


def _city(where: str, world: World, key: str) -> tuple[str, str, str, str, str, float, float]:
    for city in _CITIES:
        if city[0].lower() in where:
            return city
    return _CITIES[int(world.unit(key, "places_city") * len(_CITIES))]


def _noun(what: str) -> str:
    words = [w for w in re.findall(r"[a-z]+", what) if w not in ("best", "top", "local", "the")]
    text = " ".join(words) or "services"
    text = text[:-1] if text.endswith("s") and not text.endswith("ss") else text
    return text.title()


def _name(prefix: str, noun: str, city: str, u: float) -> str:
    if u < 0.4:
        return f"{prefix} {noun}"
    if u < 0.6:
        return f"{noun} of {city}"
    if u < 0.8:
        return f"{prefix} {noun} & Co"
    return f"{city} {noun} Pros"


@dataclass
class PageToken:
    signature: str
    offset: int
    issued: float


@register_provider
class GooglePlacesEmulator(ProviderEmulator):
    name = "google_places"
    knobs_model = GooglePlacesKnobs

    def __init__(self, world: World, knobs: Mapping[str, Any] | None = None) -> None:
        super().__init__(world, knobs)
        self.tokens: dict[str, PageToken] = {}

    def api_key(self, request: Request) -> str | None:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        return key.strip() if key else None

    def check_request(self, call: Call) -> Response | None:
        if not _mask_text(call.request):
            return self.error_response(400, ErrorReason.bad_request, _MASK_MISSING)
        return None

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "/v1/places:searchText",
                self.search_text,
                ("POST",),
                name="searchText",
                item_key=_query_key,
            )
        ]

    def error_response(self, status: int, reason: ErrorReason, message: str) -> Response:
        details: list[dict[str, Any]] = []
        if reason == ErrorReason.auth:
            status, message = 400, "API key not valid. Please pass a valid API key."
            details = [_error_info("API_KEY_INVALID")]
        elif reason == ErrorReason.out_of_credits:
            status = 403
            message = (
                "This API method requires billing to be enabled. Please enable billing "
                "on your project, then retry."
            )
            details = [_error_info("BILLING_DISABLED")]
        elif reason == ErrorReason.rate_limited:
            message = (
                "Quota exceeded for quota metric 'SearchTextRequest' and limit "
                "'SearchTextRequest per minute per project' of service "
                "'places.googleapis.com'."
            )
            details = [_error_info("RATE_LIMIT_EXCEEDED")]
        body = {
            "error": {
                "code": status,
                "message": message,
                "status": _STATUS.get(status, "UNKNOWN"),
                "details": details,
            }
        }
        return JSONResponse(body, status_code=status)

    def reset(self, *, knobs: bool = False) -> None:
        super().reset(knobs=knobs)
        self.tokens.clear()

    def places_for(self, query: str) -> list[dict[str, Any]]:
        return places_for(query, world=self.world)

    async def search_text(self, call: Call) -> Response:
        knobs = self.knobs
        assert isinstance(knobs, GooglePlacesKnobs)
        body = call.body
        if not isinstance(body, dict):
            raise EmulatedError(400, "Invalid JSON payload received. Expected an object.")
        query = body.get("textQuery")
        if not isinstance(query, str) or not query.strip():
            raise EmulatedError(400, "textQuery: Missing required field 'textQuery'.")
        page_size = _page_size(body)
        mask = _parse_mask(_mask_text(call.request))
        signature = json.dumps(
            {k: v for k, v in body.items() if k not in ("pageToken", "pageSize", "maxResultCount")},
            sort_keys=True,
        )
        offset = self._offset(body.get("pageToken"), signature, knobs)
        matches = self.places_for(query)[:MAX_RESULTS]
        page = matches[offset : offset + page_size]
        token = None
        if offset + page_size < len(matches):
            token = "".join(self.faults.content_rng.choice(_ALPHABET) for _ in range(160))
            self.tokens[token] = PageToken(signature, offset + page_size, time.monotonic())
        self.counters.bump("places_returned", len(page))
        if call.malformed:
            return JSONResponse({"places": [{"displayName": "not an object"} for _ in page]})
        answer: dict[str, Any] = {}
        if page and mask.places is not None:
            answer["places"] = [_select(place, mask.places) for place in page]
        if token and mask.next_page_token:
            answer["nextPageToken"] = token
        return JSONResponse(answer)

    def _offset(self, raw: Any, signature: str, knobs: GooglePlacesKnobs) -> int:
        if not raw:
            return 0
        token = self.tokens.get(str(raw))
        now = time.monotonic()
        if token is None or now - token.issued > knobs.page_token_ttl_s:
            raise EmulatedError(400, "The provided page token is invalid or has expired.")
        if now - token.issued < knobs.page_token_delay_s:
            self.counters.bump("page_token_too_early")
            raise EmulatedError(400, "The provided page token is not valid yet; retry shortly.")
        if token.signature != signature:
            raise EmulatedError(
                400,
                "When paginating, all parameters other than pageToken, "
                "pageSize and maxResultCount must match the initial call.",
            )
        return token.offset


@dataclass
class _Mask:
    places: list[list[str]] | None  # paths under `places`; [[]] = every field
    next_page_token: bool


def _mask_text(request: Request) -> str:
    return (
        request.headers.get("x-goog-fieldmask")
        or request.query_params.get("fields")
        or request.query_params.get("$fields")
        or ""
    ).strip()


def _parse_mask(text: str) -> _Mask:
    mask = _Mask(places=None, next_page_token=False)
    for raw in text.split(","):
        path = raw.strip()
        if not path:
            continue
        if path == "*":
            return _Mask(places=[[]], next_page_token=True)
        head, _, rest = path.partition(".")
        if head not in RESPONSE_FIELDS:
            raise EmulatedError(
                400,
                f"Error expanding 'fields' parameter. Cannot find matching "
                f"fields for path '{path}'.",
            )
        if head == "nextPageToken":
            mask.next_page_token = True
        elif head == "places":
            parts = [] if rest in ("", "*") else rest.split(".")
            if parts and parts[0] not in PLACE_FIELDS:
                raise EmulatedError(
                    400,
                    f"Error expanding 'fields' parameter. Cannot find "
                    f"matching fields for path '{path}'.",
                )
            mask.places = (mask.places or []) + [parts]
    return mask


def _select(place: Mapping[str, Any], paths: list[list[str]]) -> dict[str, Any]:
    if any(not p for p in paths):
        return dict(place)
    out: dict[str, Any] = {}
    for path in paths:
        source: Any = place
        target = out
        for depth, part in enumerate(path):
            if not isinstance(source, Mapping) or part not in source:
                break
            if depth == len(path) - 1:
                target[part] = source[part]
            else:
                source = source[part]
                target = target.setdefault(part, {})
    return out


def _page_size(body: Mapping[str, Any]) -> int:
    raw = body.get("pageSize", body.get("maxResultCount"))
    if raw in (None, 0):
        return MAX_PAGE_SIZE
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise EmulatedError(400, "pageSize must be a non-negative integer.")
    return min(raw, MAX_PAGE_SIZE)


def _error_info(reason: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "places.googleapis.com"},
    }


def _query_key(call: Call) -> str | None:
    if isinstance(call.body, dict) and isinstance(call.body.get("textQuery"), str):
        return normalize_query(call.body["textQuery"])
    return None
