"""A deterministic synthetic world of companies and people that every emulator answers from.

Nothing is stored: every fact derives from ``(seed, domain, topic, ...)`` through
:meth:`World.rng` / :meth:`World.unit`, so each emulator, process and run agrees on it.

Companies come from :meth:`World.companies` / :meth:`World.company_for`; each company's
people from :meth:`World.people`; where (if anywhere) a person's email can be found from
:meth:`World.email_outcome`. Posts live in their own module, keyed by ``linkedin_url``.

Use a new topic string per fact, so adding one never shifts the values of another.
:meth:`World.company_for` also describes domains outside the generated list (a user's seed
domains, say), from the domain alone.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import unicodedata
from typing import Any

from tam.emulators.knobs import unit_hash
from tam.emulators.vocabulary import (
    AUDIENCES,
    COUNTRY_NAMES,
    EMAIL_OUTCOME_SHARES,
    EMAIL_PATTERNS,
    FIRST_NAMES,
    INDUSTRIES,
    INJECTION,
    LAST_NAMES,
    LOCATIONS,
    NAME_TAILS,
    PREFIXES,
    SENIORITIES,
    SENIORITY_TITLES,
    SIZES,
    TASKS,
    UNIVERSE,
    EmailOutcome,
)

__all__ = [
    "COUNTRY_NAMES",
    "EMAIL_OUTCOME_SHARES",
    "SENIORITIES",
    "UNIVERSE",
    "EmailOutcome",
    "World",
    "sample_companies",
]


class World:
    """Companies, their people and where their emails can be found, from `seed` alone."""

    def __init__(self, seed: int = 7, universe: int = UNIVERSE) -> None:
        self.seed = seed
        # Lookups by domain first generate this many companies, so a domain from
        # sample_companies(n <= universe) resolves to the same company in any process.
        self.universe = universe
        self._companies: list[dict[str, Any]] = []
        self._by_domain: dict[str, dict[str, Any]] = {}
        self._people: dict[str, list[dict[str, Any]]] = {}
        self._by_linkedin: dict[str, dict[str, Any]] = {}
        self._walked = False
        # Re-entrant: people() reaches company_for() and companies(), which take it too.
        self._lock = threading.RLock()

    def rng(self, *parts: object) -> random.Random:
        """A private RNG for one fact, e.g. ``rng("acme.io", "people")``."""
        return random.Random("|".join(str(p) for p in (self.seed, *parts)))

    def unit(self, *parts: object) -> float:
        """A stable number in (0, 1) for one fact."""
        return unit_hash(self.seed, *parts)

    def companies(self, n: int) -> list[dict[str, Any]]:
        """The first `n` companies; a prefix of every longer list. Returns copies."""
        with self._lock:
            self._generate(n)
            return [dict(c) for c in self._companies[:n]]

    def _generate(self, n: int) -> None:
        while len(self._companies) < n:
            company = self._make(self.rng("company", len(self._companies)))
            # Names repeat across thousands of companies; vary the name, then number the
            # domain, so every company keeps a unique domain (the store's dedup key).
            base_name, tld = company["name"], "." + company["domain"].split(".", 1)[1]
            for attempt in range(len(NAME_TAILS) + 1000):
                if company["domain"] not in self._by_domain:
                    break
                if attempt < len(NAME_TAILS):
                    company["name"] = f"{base_name} {NAME_TAILS[attempt]}"
                    company["domain"] = _slug(company["name"]) + tld
                else:
                    company["domain"] = f"{_slug(company['name'])}{attempt}{tld}"
            company["linkedin_url"] = _linkedin(company["domain"])
            self._companies.append(company)
            self._by_domain[company["domain"]] = company

    def company(self, domain: str) -> dict[str, Any] | None:
        """A generated company by domain (within the universe or already listed), or None."""
        with self._lock:
            self._generate(self.universe)
            found = self._by_domain.get(domain.lower())
        return dict(found) if found else None

    def company_for(self, domain: str) -> dict[str, Any]:
        """Any domain's company: the generated one, or one derived from the domain itself."""
        domain = domain.lower()
        known = self.company(domain)
        if known is not None:
            return known
        company = self._make(self.rng("domain", domain))
        company["domain"] = domain
        company["linkedin_url"] = _linkedin(domain)
        return company

    # --- people and emails -------------------------------------------------------------------
    def people(self, domain: str) -> list[dict[str, Any]]:
        """The 3-12 people working at `domain`, the first of them its CEO or founder. Copies."""
        domain = domain.strip().lower()
        with self._lock:
            cached = self._people.get(domain)
        if cached is None:
            cached = self._make_people(domain, self.company_for(domain))
            with self._lock:
                self._people[domain] = cached
                self._by_linkedin.update((p["linkedin_url"], p) for p in cached)
        return [dict(p, location=dict(p["location"])) for p in cached]

    def _make_people(self, domain: str, company: dict[str, Any]) -> list[dict[str, Any]]:
        rng = self.rng(domain, "people")
        pattern = self.rng(domain, "email_pattern").choice(EMAIL_PATTERNS)
        people: list[dict[str, Any]] = []
        mailboxes: set[str] = set()
        for index in range(rng.randint(3, 12)):
            while True:  # names, and so mailboxes, are unique within a company
                first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
                f, l_ = _ascii(first), _ascii(last)
                local = pattern.format(f=f, l=l_, f0=f[:1])
                if local not in mailboxes:
                    mailboxes.add(local)
                    break
            if index == 0:
                seniority = rng.choice(["C-Suite", "Founder/Owner"])
            else:
                seniority = rng.choices(SENIORITIES, weights=[r[1] for r in SENIORITY_TITLES])[0]
            titles = SENIORITY_TITLES[SENIORITIES.index(seniority)][2]
            title = titles[0] if index == 0 and seniority == "C-Suite" else rng.choice(titles)
            city, state, code = company["city"], company["state"], company["country"]
            if rng.random() < 0.2:  # most people live where their company is
                city, state, code, _ = rng.choices(LOCATIONS, [r[3] for r in LOCATIONS])[0]
            digest = hashlib.sha256(f"{self.seed}|{domain}|person|{index}".encode()).hexdigest()
            people.append(
                {
                    "person_id": digest[:24],
                    "first_name": first,
                    "last_name": last,
                    "full_name": f"{first} {last}",
                    "title": title,
                    "seniority": seniority,
                    "linkedin_url": f"https://www.linkedin.com/in/{f}-{l_}-{digest[24:32]}",
                    "location": {
                        "city": city,
                        "state": state,
                        "country_code": code,
                        "country": COUNTRY_NAMES.get(code, code),
                    },
                    "domain": domain,
                    "email": f"{local}@{domain}",
                }
            )
        return people

    def find_person(self, domain: str, first_name: str, last_name: str) -> dict[str, Any] | None:
        """The person at `domain` with this name (case and accents ignored), or None."""
        wanted = (_ascii(first_name), _ascii(last_name))
        for person in self.people(domain):
            if (_ascii(person["first_name"]), _ascii(person["last_name"])) == wanted:
                return person
        return None

    def person_by_linkedin(self, linkedin_url: str) -> dict[str, Any] | None:
        """The person behind a profile URL the world handed out, or None.

        Profiles at companies nobody asked about yet are found by walking the universe once.
        """
        slug = linkedin_url.strip().rstrip("/").rsplit("/in/", 1)[-1].split("?", 1)[0]
        url = f"https://www.linkedin.com/in/{slug.lower()}"
        with self._lock:
            found, walked = self._by_linkedin.get(url), self._walked
        if found is None and not walked:
            for company in self.companies(self.universe):
                self.people(company["domain"])
            with self._lock:
                self._walked = True
                found = self._by_linkedin.get(url)
        return dict(found, location=dict(found["location"])) if found else None

    def email_outcome(self, domain: str, person: dict[str, Any] | str) -> EmailOutcome:
        """Which provider finds this person's email (`person`: the dict or its linkedin_url)."""
        u = self.unit(domain.strip().lower(), "email_outcome", _url_of(person))
        for outcome, share in EMAIL_OUTCOME_SHARES:
            if u < share:
                return outcome
            u -= share
        return "nowhere"

    def email_for(self, domain: str, person: dict[str, Any] | str) -> str:
        """The person's mailbox at `domain` (whether or not any provider can find it)."""
        url = _url_of(person)
        for known in self.people(domain):
            if known["linkedin_url"] == url:
                return str(known["email"])
        raise KeyError(f"{url} does not work at {domain}")

    def hunter_status(self, domain: str, person: dict[str, Any] | str) -> str | None:
        """Hunter's own verification status of the email it finds (None: Hunter finds none)."""
        outcome = self.email_outcome(domain, person)
        if outcome == "hunter_valid":  # half Hunter verified itself; half need NeverBounce
            u = self.unit(domain.strip().lower(), "hunter_status", _url_of(person))
            return "valid" if u < 0.5 else "unknown"
        return {
            "prospeo_verified": "valid",
            "hunter_catchall": "accept_all",
            "hunter_invalid": "unknown",
        }.get(outcome)

    def neverbounce_result(self, domain: str, person: dict[str, Any] | str) -> str:
        """What NeverBounce says about the person's mailbox."""
        return {
            "prospeo_verified": "valid",
            "hunter_valid": "valid",
            "hunter_catchall": "catchall",
        }.get(self.email_outcome(domain, person), "invalid")

    def expected_email(self, domain: str, person: dict[str, Any] | str) -> tuple[str, str | None]:
        """(email_status, source) the contact waterfall should conclude for this person."""
        return {
            "prospeo_verified": ("verified", "prospeo"),
            "hunter_valid": ("verified", "hunter"),
            "hunter_catchall": ("catch_all", "hunter"),
            "hunter_invalid": ("invalid", "hunter"),
            "nowhere": ("not_found", None),
        }[self.email_outcome(domain, person)]

    def _make(self, rng: random.Random) -> dict[str, Any]:
        industry, _, words, templates, tlds = rng.choices(
            INDUSTRIES, weights=[row[1] for row in INDUSTRIES]
        )[0]
        name = f"{rng.choice(PREFIXES)} {rng.choice(words)}"
        city, state, country, _ = rng.choices(LOCATIONS, weights=[r[3] for r in LOCATIONS])[0]
        size, low, high, _ = rng.choices(SIZES, weights=[s[3] for s in SIZES])[0]
        market = (
            "US"
            if country == "US"
            else {"GB": "UK", "DE": "German", "CA": "Canadian", "AU": "Australian"}.get(
                country, "European"
            )
        )
        description = rng.choice(templates).format(
            audience=rng.choice(AUDIENCES), task=rng.choice(TASKS), market=market
        )
        if industry in ("Retail", "Construction", "Logistics") and rng.random() < 0.08:
            description += INJECTION  # the qualifier must not obey text inside the data
        tld = rng.choice(tlds)
        return {
            "domain": _slug(name) + tld,
            "name": name,
            "industry": industry,
            "employee_count": size,
            "employees": rng.randint(low, high),
            "city": city,
            "state": state,
            "country": country,
            "location": f"{city}, {state}, {country}",
            "description": description,
            "digital_footprint_score": _footprint(rng, low),
        }


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())


def _linkedin(domain: str) -> str:
    return f"https://www.linkedin.com/company/{domain.split('.', 1)[0]}"


def _ascii(text: str) -> str:
    """Lowercase ASCII letters and digits only ("Renée" -> "renee", "O'Brien" -> "obrien")."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "", folded.lower())


def _url_of(person: dict[str, Any] | str) -> str:
    return person if isinstance(person, str) else str(person["linkedin_url"])


def _footprint(rng: random.Random, employees_low: int) -> int:
    # Bigger companies leave a bigger footprint, with plenty of spread.
    base = 25 + 8 * len(str(employees_low))
    return max(0, min(100, round(rng.gauss(base, 15))))


def sample_companies(n: int = 200, seed: int = 7) -> list[dict[str, Any]]:
    """The demo's companies: a mix where saas/software/fintech keywords match ~half."""
    return World(seed).companies(n)
