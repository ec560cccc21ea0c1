"""Seeded generator of realistic SMB CRM exports (the demo's landing zone).

It writes what an SMB's CRM and helpdesk would hand over:

* ``hubspot_contacts.csv``, ``hubspot_companies.csv``, ``hubspot_deals.csv``
  with HubSpot export headers and labels;
* ``zendesk_tickets.jsonl``: Zendesk ticket objects whose free text carries
  PII (the requester's name, email and phone number).

Output is a pure function of ``(seed, contacts, as_of, tickets_per_contact)``: the same arguments
give byte-identical files. Rows are produced in chunks and streamed to disk,
so memory stays flat from 1k to 10M contacts.

A small, deterministic share of rows is deliberately dirty (impossible
dates, exact duplicates, conflicting record versions, a malformed CSV line,
a truncated JSON line, non-numeric amounts) so that the ingest stage's
quarantine is exercised on every run.
"""

from __future__ import annotations

import csv
import json
import os
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 50_000
TICKETS_PER_CONTACT = 1.5  # mean of the Poisson draw of tickets per contact

CONTACT_HEADER = [
    "Record ID", "First Name", "Last Name", "Email", "Phone Number", "Date of Birth",
    "Street Address", "City", "Postal Code", "Country/Region", "Lifecycle Stage",
    "Create Date", "Last Modified Date", "Marketing Consent", "Analytics Consent",
    "Associated Company ID",
]  # fmt: skip
COMPANY_HEADER = [
    "Record ID", "Company name", "Company Domain Name", "Industry", "Number of Employees",
    "Annual Revenue", "Country/Region", "City", "Create Date",
]  # fmt: skip
DEAL_HEADER = [
    "Record ID", "Deal Name", "Deal Stage", "Pipeline", "Amount", "Currency", "Close Date",
    "Create Date", "Associated Contact ID", "Associated Company ID",
]  # fmt: skip

FILES = {
    "contacts": "hubspot_contacts.csv",
    "companies": "hubspot_companies.csv",
    "deals": "hubspot_deals.csv",
    "tickets": "zendesk_tickets.jsonl",
}

# Per-country locale data: (country label, names, streets, cities, phone and postal formatters)
FIRST = {
    "en": ["James", "Mary", "Olivia", "Liam", "Emma", "Noah", "Ava", "Sophia", "Jackson",
           "Harper", "Ethan", "Chloe", "Grace", "Henry", "Aiden", "Zoë", "Siobhán", "Connor",
           "Priya", "Mohammed", "Wei", "Aaliyah", "Declan", "Isla"],
    "de": ["Lukas", "Anna", "Jürgen", "Sophie", "Maximilian", "Lea", "Björn", "Mia", "Jörg",
           "Hannah", "Felix", "Käthe", "Emil", "Leonie", "Ömer", "Greta"],
    "fr": ["Léa", "Hugo", "Chloé", "Louis", "Camille", "Gabriel", "Inès", "Théo", "Zoé",
           "François", "Amélie", "Jérôme", "Manon", "Noël", "Céline", "Raphaël"],
    "nl": ["Daan", "Emma", "Sem", "Julia", "Lucas", "Tess", "Bram", "Sanne", "Thijs",
           "Fleur", "Joëlle", "Ruud", "Anouk", "Pieter"],
    "es": ["Lucía", "Hugo", "Martina", "Mateo", "Sofía", "Álvaro", "Paula", "Íñigo",
           "Carmen", "José", "María", "Sergio", "Nuria", "Jesús"],
}  # fmt: skip
LAST = {
    "en": ["Smith", "Johnson", "Williams", "Brown", "Taylor", "Anderson", "Thompson",
           "O'Brien", "MacDonald", "Nguyen", "Patel", "Walker", "Harris", "Clarke",
           "Robinson", "Kowalski", "Fitzgerald", "Okafor", "Chen", "Murphy"],
    "de": ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
           "Schäfer", "Koch", "Größer", "Hoffmann", "Schröder", "Zimmermann"],
    "fr": ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Petit", "Durand", "Leroy",
           "Moreau", "Lefèvre", "Girard", "Benoît", "Chevalier", "Rousseau"],
    "nl": ["de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Visser",
           "Smit", "Meijer", "de Boer", "Mulder", "van Leeuwen"],
    "es": ["García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez",
           "Pérez", "Gómez", "Martín", "Jiménez", "Ruiz", "Hernández", "Díaz"],
}  # fmt: skip


# Formatters take pre-drawn randomness (a 12-digit string ``d``, a uniform ``u``
# and a flag) so the generator can draw everything for a chunk at once.
_FSA = "KLMNTV"
_ABC = "ABCEGHJ"
_GB_OUT = ["SW1A", "M1", "LS6", "BS8", "EH3", "CF10", "N1", "E14"]
_GB_IN = "ABDEFGHJLNPQRSTUWXYZ"
_NL = "ABCDEFGHJKLMNPRSTVWXZ"


def _phone_us(d: str, local: bool) -> str:
    area, mid = 201 + int(d[:3]) % 789, 200 + int(d[3:6]) % 799
    return f"({area}) {mid}-{d[6:10]}" if local else f"+1 {area}-{mid}-{d[6:10]}"


COUNTRIES: dict[str, dict[str, Any]] = {
    "US": {"label": "United States", "lang": "en", "weight": 0.34,
           "cities": ["Boston", "Austin", "Denver", "Seattle", "Chicago", "Portland", "Newark"],
           "streets": ["Main St", "Oak Avenue", "Maple Drive", "Washington Blvd", "Elm Street"],
           "postal": lambda d, u: d[:5], "phone": _phone_us},
    "CA": {"label": "Canada", "lang": "en", "weight": 0.06,
           "cities": ["Toronto", "Montréal", "Vancouver", "Calgary", "Ottawa"],
           "streets": ["King Street W", "Rue Sainte-Catherine", "Granville St", "Bank Street"],
           "postal": lambda d, u: f"{_FSA[int(d[0]) % 6]}{d[1]}{_ABC[int(d[2]) % 7]} "
                                  f"{d[3]}{_FSA[int(d[4]) % 6]}{d[5]}",
           "phone": _phone_us},
    "GB": {"label": "United Kingdom", "lang": "en", "weight": 0.16,
           "cities": ["London", "Manchester", "Leeds", "Bristol", "Edinburgh", "Cardiff"],
           "streets": ["High Street", "Station Road", "Church Lane", "Victoria Road"],
           "postal": lambda d, u: f"{_GB_OUT[int(d[0]) % 8]} {1 + int(d[1]) % 9}"
                                  f"{_GB_IN[int(d[2:4]) % 20]}{_GB_IN[int(d[4:6]) % 20]}",
           "phone": lambda d, local: f"020 7946 {d[:4]}" if local else f"+44 7{d[:3]} {d[3:9]}"},
    "DE": {"label": "Germany", "lang": "de", "weight": 0.14,
           "cities": ["Berlin", "München", "Köln", "Dresden", "Leipzig", "Düsseldorf"],
           "streets": ["Hauptstraße", "Bahnhofstraße", "Schillerstraße", "Gartenweg"],
           "postal": lambda d, u: f"0{d[:4]}" if u < 0.2 else f"{1 + int(d[0]) % 9}{d[1:5]}",
           "phone": lambda d, local: f"030 {d[:8]}" if local else f"+49 151 {d[:8]}"},
    "FR": {"label": "France", "lang": "fr", "weight": 0.12,
           "cities": ["Paris", "Lyon", "Marseille", "Bordeaux", "Lille", "Nantes"],
           "streets": ["Rue de la Paix", "Avenue Victor Hugo", "Boulevard Voltaire", "Rue Lafayette"],
           "postal": lambda d, u: f"0{d[:4]}" if u < 0.15 else f"{1 + int(d[0]) % 9}{d[1:5]}",
           "phone": lambda d, local: (f"01 {d[0:2]} {d[2:4]} {d[4:6]} {d[6:8]}" if local
                                      else f"+33 6 {d[0:2]} {d[2:4]} {d[4:6]} {d[6:8]}")},
    "NL": {"label": "Netherlands", "lang": "nl", "weight": 0.08,
           "cities": ["Amsterdam", "Rotterdam", "Utrecht", "Den Haag", "Eindhoven"],
           "streets": ["Kerkstraat", "Dorpsstraat", "Molenweg", "Stationsplein"],
           "postal": lambda d, u: f"{1 + int(d[0]) % 9}{d[1:4]} {_NL[int(d[4:6]) % 21]}"
                                  f"{_NL[int(d[6:8]) % 21]}",
           "phone": lambda d, local: f"020 {d[:3]} {d[3:7]}" if local else f"+31 6 {d[:8]}"},
    "ES": {"label": "Spain", "lang": "es", "weight": 0.06,
           "cities": ["Madrid", "Barcelona", "Valencia", "Sevilla", "Bilbao", "Málaga"],
           "streets": ["Calle Mayor", "Gran Vía", "Calle de Alcalá", "Paseo de Gracia"],
           "postal": lambda d, u: f"0{1 + int(d[0]) % 9}{d[1:4]}" if u < 0.3
                                  else f"{10 + int(d[:2]) % 43}{d[2:5]}",
           "phone": lambda d, local: (f"91 {d[:3]} {d[3:5]} {d[5:7]}" if local
                                      else f"+34 6{d[:2]} {d[2:5]} {d[5:8]}")},
    "AU": {"label": "Australia", "lang": "en", "weight": 0.04,
           "cities": ["Sydney", "Melbourne", "Brisbane", "Darwin", "Perth"],
           "streets": ["George Street", "Collins Street", "Smith Street", "Queen Street"],
           "postal": lambda d, u: f"08{d[:2]}" if u < 0.2 else f"{2 + int(d[0]) % 6}{d[1:4]}",
           "phone": lambda d, local: f"(02) {d[:4]} {d[4:8]}" if local else f"+61 4{d[:2]} {d[2:5]} {d[5:8]}"},
}  # fmt: skip
COUNTRY_CODES = list(COUNTRIES)
COUNTRY_P = np.array([float(COUNTRIES[c]["weight"]) for c in COUNTRY_CODES])
COUNTRY_P = COUNTRY_P / COUNTRY_P.sum()

LIFECYCLE = ["Subscriber", "Lead", "Marketing Qualified Lead", "Sales Qualified Lead",
             "Opportunity", "Customer", "Evangelist", "Other"]  # fmt: skip
LIFECYCLE_P = np.array([0.08, 0.25, 0.12, 0.08, 0.09, 0.33, 0.03, 0.02])
DEAL_STAGES = ["Appointment Scheduled", "Qualified To Buy", "Presentation Scheduled",
               "Decision Maker Bought-In", "Contract Sent", "Closed Won", "Closed Lost"]  # fmt: skip
DEAL_STAGE_P = np.array([0.12, 0.12, 0.1, 0.08, 0.08, 0.3, 0.2])
INDUSTRIES = ["Software", "Retail", "Manufacturing", "Healthcare", "Financial Services",
              "Education", "Hospitality", "Logistics", "Construction", "Media"]  # fmt: skip
CHANNELS = ["email", "web", "chat", "voice", "api"]
CHANNEL_P = np.array([0.38, 0.27, 0.2, 0.1, 0.05])
PRIORITIES = ["low", "normal", "high", "urgent"]
PRIORITY_P = np.array([0.25, 0.5, 0.18, 0.07])
STATUSES = ["new", "open", "pending", "solved", "closed"]
STATUS_P = np.array([0.05, 0.1, 0.07, 0.38, 0.4])
MAIL_DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "icloud.com", "gmx.de", "web.de",
                "orange.fr", "free.fr", "hotmail.co.uk", "ziggo.nl", "telefonica.es"]  # fmt: skip
SUBJECTS = [
    "Refund request for order {order}",
    "Cannot log in to my account",
    "Invoice {order} is wrong",
    "Delivery has not arrived",
    "Question about my subscription",
    "Please update my details",
    "{first} {last}: billing problem",
    "Cancel my plan",
    "App crashes on start",
    "Change of address for {first}",
]
BODIES = [
    "Hi, this is {first} {last}. My order {order} has not arrived yet. You can reach me at {phone} or {email}.",
    "Hello team,\nI was charged twice for invoice {order}. Please call me back on {phone}.\nThanks, {first}",
    "Dear support, please send the receipt to {email} instead of my old address. Regards, {first} {last}",
    "The app keeps crashing when I open the dashboard. Steps: open app, tap reports. Version 4.2.",
    "Hi! Could you change the name on my account to {first} {last}? My number is {phone}.",
    "I would like to cancel my subscription at the end of the month. Order ref {order}.",
    "{first} here again - still waiting for an answer about ticket {order}. Email me: {email}",
    "Can you explain the new pricing tiers? We are a team of 12.",
]


@dataclass
class GenerateResult:
    """What was written, for the CLI and the tests."""

    out_dir: str
    seed: int
    as_of: str
    files: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    dirty: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _ascii(s: str) -> str:
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode().lower()


class _Writer:
    """A CSV or JSON-lines file written in order, with a row counter."""

    def __init__(self, path: Path, header: list[str] | None) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self.fh = self.tmp.open("w", encoding="utf-8", newline="")
        self.csv = csv.writer(self.fh, lineterminator="\r\n") if header else None
        if self.csv and header:
            self.csv.writerow(header)
        self.rows = 0

    def row(self, values: list[str]) -> None:
        assert self.csv is not None
        self.csv.writerow(values)
        self.rows += 1

    def raw(self, line: str) -> None:
        self.fh.write(line if line.endswith("\n") else line + "\n")
        self.rows += 1

    def close(self) -> None:
        self.fh.close()
        os.replace(self.tmp, self.path)  # readers see the whole file or the old one

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


def _ts(d: datetime) -> str:
    return d.strftime("%Y-%m-%d %H:%M")


def _iso(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def _digits(rng: np.random.Generator, n: int, width: int = 12) -> list[str]:
    """``n`` random digit strings of ``width`` digits (leading zeros kept)."""
    return [f"{x:0{width}d}" for x in rng.integers(0, 10**width, n, dtype=np.int64)]


def _cat(rng: np.random.Generator, values: list[str], p: np.ndarray, n: int) -> list[str]:
    return [values[i] for i in rng.choice(len(values), size=n, p=p / p.sum())]


def generate(
    out_dir: Path,
    contacts: int = 10_000,
    seed: int = 42,
    as_of: date = date(2026, 10, 31),
    progress: Callable[[int], None] | None = None,
    tickets_per_contact: float | None = None,
) -> GenerateResult:
    """Write the four exports to ``out_dir``; return counts. Deterministic in its arguments.

    ``tickets_per_contact`` is the mean of the Poisson draw of tickets per contact
    (default ``TICKETS_PER_CONTACT``, 1.5; the benchmark asks for 3.0). Leaving it
    unset, or passing the default, gives byte-identical output to earlier versions."""
    if contacts < 10:
        raise ValueError("--contacts must be at least 10")
    ticket_rate = TICKETS_PER_CONTACT if tickets_per_contact is None else float(tickets_per_contact)
    if not 0.0 <= ticket_rate <= 1000.0:
        raise ValueError("tickets_per_contact must be between 0 and 1000")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    as_of_dt = datetime(as_of.year, as_of.month, as_of.day, 18, 0)
    history_minutes = 730 * 1440
    n_companies = max(5, contacts // 10)
    writers = {
        "contacts": _Writer(out_dir / FILES["contacts"], CONTACT_HEADER),
        "companies": _Writer(out_dir / FILES["companies"], COMPANY_HEADER),
        "deals": _Writer(out_dir / FILES["deals"], DEAL_HEADER),
        "tickets": _Writer(out_dir / FILES["tickets"], None),
    }
    dirty: dict[str, dict[str, int]] = {e: {} for e in writers}

    def mark(entity: str, kind: str) -> None:
        dirty[entity][kind] = dirty[entity].get(kind, 0) + 1

    def picks(n_rows: int, k: int) -> set[int]:
        return set(rng.choice(n_rows, size=min(k, n_rows), replace=False).tolist())

    # Dirty rows: about 0.2% of contacts per kind, at least one of each at any size.
    n_dirty = max(1, contacts // 500)
    try:
        for start in range(0, n_companies, CHUNK):
            n = min(n_companies, start + CHUNK) - start
            cc = _cat(rng, COUNTRY_CODES, COUNTRY_P, n)
            stems = rng.integers(0, 1000, n)
            ind = rng.integers(0, len(INDUSTRIES), (n, 2))
            sfx = rng.integers(0, 8, n)
            age = rng.integers(200 * 1440, 2000 * 1440, n)
            emp = np.clip(rng.lognormal(3.0, 1.3, n), 1, 20_000).astype(int)
            rev = emp * rng.uniform(40_000, 180_000, n)
            city_ix = rng.integers(0, 1000, n)
            bad = rng.random(n) < 0.002
            for j in range(n):
                cid = start + j
                info = COUNTRIES[cc[j]]
                lasts = LAST[info["lang"]]
                stem = lasts[stems[j] % len(lasts)]
                suffix = ["GmbH", "SARL", "B.V.", "S.L.", "Ltd", "Inc.", "LLC", "& Co"][sfx[j]]
                revenue = f"{rev[j]:.2f}"
                if bad[j] or cid == n_companies // 2:
                    revenue = "approx. 2M"
                    mark("companies", "invalid_number")
                domain = _ascii(stem).replace(" ", "").replace("'", "") + f"{cid}.example.com"
                writers["companies"].row([
                    str(5_000_001 + cid), f"{stem} {INDUSTRIES[ind[j, 0]]} {suffix}", domain,
                    INDUSTRIES[ind[j, 1]], str(emp[j]), revenue, info["label"],
                    info["cities"][city_ix[j] % len(info["cities"])],
                    _ts(as_of_dt - timedelta(minutes=int(age[j]))),
                ])  # fmt: skip

        bad_dob = picks(contacts, n_dirty)
        dup_rows = picks(contacts, n_dirty)
        conflict_rows = picks(contacts, n_dirty)
        malformed_rows = picks(contacts, 1)
        bad_ticket_dates = picks(contacts, n_dirty)
        truncated_tickets = picks(contacts, 1)
        bad_amounts = picks(contacts, n_dirty)
        ticket_id = 9_000_001
        deal_id = 7_000_001

        for start in range(0, contacts, CHUNK):
            n = min(contacts, start + CHUNK) - start
            cc = _cat(rng, COUNTRY_CODES, COUNTRY_P, n)
            name_ix = rng.integers(0, 10_000, (n, 2))
            email_n = rng.integers(1, 999, n)
            email_style = rng.integers(0, 4, n)
            mail_dom = rng.integers(0, len(MAIL_DOMAINS), n)
            ph_digits = _digits(rng, n)
            ph_local = rng.random(n) < 0.4
            pc_digits = _digits(rng, n)
            pc_u = rng.random(n)
            age_days = rng.integers(18 * 365 + 5, 85 * 365, n)
            street_no = rng.integers(1, 300, n)
            street_ix = rng.integers(0, 1000, (n, 2))
            created_m = rng.integers(1440, history_minutes, n)
            modified_f = rng.random(n)
            consent = rng.random((n, 2))
            has_company = rng.random(n) < 0.75
            company_ix = rng.integers(0, n_companies, n)
            lifecycle = _cat(rng, LIFECYCLE, LIFECYCLE_P, n)
            n_deals = rng.poisson(0.4, n)
            n_tickets = rng.poisson(ticket_rate, n)
            m_deals, m_tickets = int(n_deals.sum()), int(n_tickets.sum())
            d_amount = np.round(rng.lognormal(8.5, 1.0, m_deals), 2)
            d_stage = _cat(rng, DEAL_STAGES, DEAL_STAGE_P, m_deals)
            d_offset = rng.integers(0, 120 * 1440, m_deals)
            d_close = rng.integers(5, 90, m_deals)
            d_ind = rng.integers(0, len(INDUSTRIES), m_deals)
            t_frac = rng.random(m_tickets)
            t_status = _cat(rng, STATUSES, STATUS_P, m_tickets)
            t_prio = _cat(rng, PRIORITIES, PRIORITY_P, m_tickets)
            t_chan = _cat(rng, CHANNELS, CHANNEL_P, m_tickets)
            t_hours = rng.lognormal(0.0, 1.0, m_tickets)
            t_subj = rng.integers(0, len(SUBJECTS), m_tickets)
            t_body = rng.integers(0, len(BODIES), m_tickets)
            t_order = rng.integers(100000, 999999, m_tickets)
            t_rating = rng.integers(0, 5, m_tickets)
            dk = tk = 0
            for j in range(n):
                i = start + j
                contact_id = 1_000_001 + i
                info = COUNTRIES[cc[j]]
                firsts, lasts = FIRST[info["lang"]], LAST[info["lang"]]
                first = firsts[name_ix[j, 0] % len(firsts)]
                last = lasts[name_ix[j, 1] % len(lasts)]
                local = f"{_ascii(first)}.{_ascii(last)}"
                if email_style[j] == 1:
                    local = f"{_ascii(first)[0]}{_ascii(last)}"
                email = f"{local.replace(' ', '').replace(chr(39), '')}{email_n[j]}@{MAIL_DOMAINS[mail_dom[j]]}"
                if email_style[j] == 3:
                    email = email.capitalize()  # as typed into the CRM
                phone = info["phone"](ph_digits[j], bool(ph_local[j]))
                dob = (as_of - timedelta(days=int(age_days[j]))).isoformat()
                if i in bad_dob:
                    dob = ["31/02/1985", "1985-13-40", "unknown-date"][i % 3]
                    mark("contacts", "invalid_date")
                streets, cities = info["streets"], info["cities"]
                created = as_of_dt - timedelta(minutes=int(created_m[j]))
                modified = created + (as_of_dt - created) * float(modified_f[j])
                company = str(5_000_001 + int(company_ix[j])) if has_company[j] else ""
                row = [
                    str(contact_id), first, last, email, phone, dob,
                    f"{street_no[j]} {streets[street_ix[j, 0] % len(streets)]}",
                    cities[street_ix[j, 1] % len(cities)], info["postal"](pc_digits[j], pc_u[j]),
                    info["label"], lifecycle[j], _ts(created), _ts(modified),
                    "true" if consent[j, 0] < 0.6 else "false",
                    "true" if consent[j, 1] < 0.88 else "false",
                    company,
                ]  # fmt: skip
                if i in malformed_rows:
                    # a row cut short, as a hand-edited spreadsheet produces
                    writers["contacts"].raw(f"{contact_id},{first},{last},{email}\r\n")
                    mark("contacts", "malformed_line")
                else:
                    writers["contacts"].row(row)
                if i in dup_rows:
                    writers["contacts"].row(row)  # exact duplicate (re-exported row)
                    mark("contacts", "duplicate")
                if i in conflict_rows:
                    newer = list(row)
                    newer[10] = "Customer"
                    newer[12] = _ts(modified + timedelta(minutes=5))
                    writers["contacts"].row(newer)  # a later version of the same record
                    mark("contacts", "conflicting_version")

                for _ in range(int(n_deals[j])):
                    amount = f"{d_amount[dk]:.2f}"
                    if i in bad_amounts:
                        amount = "12.500,00 EUR"
                        mark("deals", "invalid_number")
                        bad_amounts.discard(i)
                    d_created = min(created + timedelta(minutes=int(d_offset[dk])), as_of_dt)
                    close = ""
                    if d_stage[dk].startswith("Closed"):
                        close = min(d_created + timedelta(days=int(d_close[dk])), as_of_dt).date().isoformat()
                    writers["deals"].row([
                        str(deal_id), f"{last} - {INDUSTRIES[d_ind[dk]]} deal", d_stage[dk],
                        "Sales Pipeline", amount, "EUR", close, _ts(d_created), str(contact_id),
                        company,
                    ])  # fmt: skip
                    deal_id += 1
                    dk += 1

                for _ in range(int(n_tickets[j])):
                    t_created = created + (as_of_dt - created) * float(t_frac[tk])
                    status, priority = t_status[tk], t_prio[tk]
                    solved = None
                    if status in ("solved", "closed"):
                        scale = {"urgent": 2.7, "high": 7.4, "normal": 20.0, "low": 36.6}[priority]
                        solved = min(t_created + timedelta(hours=float(t_hours[tk]) * scale), as_of_dt)
                    fill = {
                        "first": first, "last": last, "email": email, "phone": phone,
                        "order": f"#{t_order[tk]}",
                    }  # fmt: skip
                    created_s = _iso(t_created)
                    if i in bad_ticket_dates:
                        created_s = "2025-02-30T25:61:00Z"
                        mark("tickets", "invalid_timestamp")
                        bad_ticket_dates.discard(i)
                    ticket = {
                        "id": ticket_id,
                        "url": f"https://acme.zendesk.com/api/v2/tickets/{ticket_id}.json",
                        "requester_id": contact_id,
                        "subject": SUBJECTS[t_subj[tk]].format(**fill),
                        "description": BODIES[t_body[tk]].format(**fill),
                        "via": {"channel": t_chan[tk]},
                        "priority": priority,
                        "status": status,
                        "created_at": created_s,
                        "updated_at": _iso(solved or t_created),
                        "solved_at": _iso(solved) if solved else None,
                        "satisfaction_rating": {
                            "score": ["good", "good", "bad", "offered", "unoffered"][t_rating[tk]]
                            if solved
                            else "unoffered"
                        },
                        "tags": ["crm_export"],
                    }
                    line = json.dumps(ticket, ensure_ascii=False)
                    if i in truncated_tickets:
                        line = line[: len(line) // 2]  # a line cut off mid-object
                        mark("tickets", "malformed_json")
                        truncated_tickets.discard(i)
                    writers["tickets"].raw(line)
                    ticket_id += 1
                    tk += 1
            if progress:
                progress(n)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    for w in writers.values():
        w.close()

    return GenerateResult(
        out_dir=str(out_dir),
        seed=seed,
        as_of=as_of.isoformat(),
        files={e: str(out_dir / FILES[e]) for e in FILES},
        rows={e: w.rows for e, w in writers.items()},
        dirty=dirty,
    )
