"""DiscolikeClient's request, parsing and error mapping (respx; the emulator tests the rest)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from uuid import uuid4

import httpx
import pytest
import respx

from tam.clients.discolike import (
    DiscolikeClient,
    DiscolikeCompany,
    employee_range_param,
    industry_label,
    to_new_company,
)
from tam.errors import (
    AuthFailed,
    BadResponse,
    InvalidRequest,
    OutOfCredits,
    RateLimited,
    Unavailable,
)

BASE = "https://disco.test"


def company(domain: str, similarity: int = 80, **extra: object) -> dict[str, object]:
    return {
        "domain": domain,
        "name": domain.split(".")[0].title(),
        "score": 420,
        "similarity": similarity,
        "employees": "51-200",
        "address": {"city": "Austin", "state": "TX", "country": "US"},
        "description": "B2B SaaS for finance teams.",
        "industry_groups": {"SAAS": 0.8, "SOFTWARE": 0.2},
        "keywords": {"invoicing": 0.7},
        **extra,
    }


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
def client() -> DiscolikeClient:
    return DiscolikeClient(api_key="dk-secret", base_url=BASE)


async def test_discover_sends_the_real_parameters(mock, client):
    route = mock.get("/v1/discover").respond(200, json=[], headers={"X-Total-Count": "0"})
    await client.discover(
        domains=["https://www.Stripe.com/pricing", "notion.so", "stripe.com", "not a domain"],
        country="us",
        max_records=150,
        min_digital_footprint=50,
        icp_text="  B2B SaaS for finance teams ",
        employee_ranges=["11-50", "51-200"],
        exclude_domains=["www.bad.com"],
    )
    request = route.calls.last.request
    assert request.headers["x-discolike-key"] == "dk-secret"
    assert request.url.params.multi_items() == [
        ("domain", "stripe.com"),
        ("domain", "notion.so"),
        ("include_search_domains", "false"),
        ("country", "US"),
        ("max_records", "150"),
        ("min_digital_footprint", "50"),
        ("icp_text", "B2B SaaS for finance teams"),
        ("employee_range", "11,200"),
        ("exclude_domain", "bad.com"),
    ]


async def test_bare_array_is_parsed_deduplicated_and_costed(mock, client):
    body = [
        company("acme.io", 91),
        company("WWW.Acme.io", 90),  # the same company under another spelling
        company("beta.com", 70, employees=120, industry_groups=["FINANCIAL_SERVICES"]),
    ]
    mock.get("/v1/discover").respond(200, json=body, headers={"X-Total-Count": "812"})
    page = await client.discover_page(domains=["seed.com"], max_records=3)
    assert [c.domain for c in page.companies] == ["acme.io", "beta.com"]
    assert page.total_count == 812
    acme, beta = page.companies
    assert acme.similarity == 91 and acme.score == 420 and acme.top_industry == "SAAS"
    assert acme.location == "Austin, TX, US" and acme.model_extra == {
        "keywords": {"invoicing": 0.7}
    }
    assert beta.employees == "120" and beta.top_industry == "FINANCIAL_SERVICES"
    assert page.usage.credits == 3 and page.usage.cost_usd == pytest.approx(0.18 + 3 * 0.0035)
    assert client.usage.credits == 3
    assert await client.discover(domains=["seed.com"]) == page.companies


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"results": [company("acme.io")]}, "bare JSON array"),
        ({"companies": []}, "bare JSON array"),
        ("<html><body>Maintenance</body></html>", "expected JSON"),
        ([{"name": "No domain"}], "0.domain"),
        ([company("acme.io", similarity="high")], "0.similarity"),  # type: ignore[arg-type]
        ([company("acme.io", address="Austin")], "0.address"),
        ("null", "NoneType"),
    ],
)
async def test_anything_but_an_array_of_companies_is_bad_response(mock, client, content, match):
    text = content if isinstance(content, str) else json.dumps(content)
    mock.get("/v1/discover").respond(200, content=text)
    with pytest.raises(BadResponse, match=match):
        await client.discover(domains=["seed.com"])


@pytest.mark.parametrize(
    ("response", "error", "match"),
    [
        (httpx.Response(401, json={"detail": "Invalid API key"}), AuthFailed, "Invalid API key"),
        (httpx.Response(403, json={"detail": "Plan does not include this"}), AuthFailed, "Plan"),
        (httpx.Response(402, json={"detail": "Payment required"}), OutOfCredits, "Payment"),
        (
            httpx.Response(403, json={"detail": "Monthly spend limit reached"}),
            OutOfCredits,
            "spend",
        ),
        (
            httpx.Response(
                422, json={"detail": [{"loc": ["query", "max_records"], "msg": "must be <= 10000"}]}
            ),
            InvalidRequest,
            "query.max_records: must be <= 10000",
        ),
        (httpx.Response(500, text="<html>Internal Server Error</html>"), Unavailable, "Internal"),
        (httpx.Response(503, json={"detail": "Service Unavailable"}), Unavailable, "Unavailable"),
    ],
)
async def test_error_mapping(mock, client, response, error, match):
    mock.get("/v1/discover").mock(return_value=response)
    with pytest.raises(error, match=match) as info:
        await client.discover(domains=["seed.com"])
    assert info.value.provider == "discolike" and info.value.status_code == response.status_code
    assert "dk-secret" not in str(info.value)


async def test_rate_limit_carries_retry_after(mock, client):
    mock.get("/v1/discover").respond(
        429, json={"detail": "Rate limit"}, headers={"Retry-After": "4"}
    )
    with pytest.raises(RateLimited) as info:
        await client.discover(domains=["seed.com"])
    assert info.value.retry_after == 4 and info.value.retryable


async def test_more_than_ten_seeds_is_refused_before_sending(mock, client):
    with pytest.raises(InvalidRequest, match="at most 10"):
        await client.discover(domains=[f"seed{i}.com" for i in range(11)])
    assert not mock.calls


def test_to_new_company_maps_every_field():
    project = uuid4()
    item = DiscolikeCompany.model_validate(
        company(
            "https://www.Acme.io/",
            name="Acme",
            industry_groups={"SOFTWARE": 0.3, "IT_SERVICES": 0.7},
        )
    )
    new = to_new_company(project, item)
    assert new.project_id == project and new.source == "discolike"
    assert new.domain == "acme.io" and new.name == "Acme"
    assert new.industry == "IT Services"
    assert new.employee_count == "51-200" and new.location == "Austin, TX, US"
    assert new.digital_footprint_score == 420 and new.similarity_score == 80
    assert new.description == "B2B SaaS for finance teams."
    assert new.raw_data["domain"] == "https://www.Acme.io/" and new.raw_data["keywords"]
    assert new.qualification_status == "pending"


def test_to_new_company_without_name_or_address():
    new = to_new_company(uuid4(), DiscolikeCompany(domain="solo.dev"))
    assert new.name == "solo.dev" and new.location is None and new.industry is None


@pytest.mark.parametrize(
    ("category", "label"),
    [
        ("SAAS", "SaaS"),
        ("FINANCIAL_SERVICES", "Financial Services"),
        ("IT_SERVICES", "IT Services"),
        ("E-COMMERCE", "E-commerce"),
        (None, None),
    ],
)
def test_industry_labels(category, label):
    assert industry_label(category) == label


@pytest.mark.parametrize(
    ("ranges", "param"),
    [
        (["11-50", "51-200"], "11,200"),
        (["201-500", "10001+"], "201,1000000"),
        (["1,001-5,000"], "1001,5000"),
        (["lots"], None),
        ([], None),
        (None, None),
    ],
)
def test_employee_ranges_become_one_span(ranges, param):
    assert employee_range_param(ranges) == param
