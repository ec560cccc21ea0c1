"""Integration tests: dbt builds the warehouse marts from a privacy zone.

A small privacy zone (the Parquet layout the Spark job writes) goes in; the
tests check what the publish step and an analyst would notice: the marts and
their exact contract columns, row counts, derived values, and that bad input
stops the build with an error naming the failing dbt test.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crmshield.config import Settings
from crmshield.transform import TransformError, TransformResult, run_dbt

pytestmark = pytest.mark.integration

D = date
AMOUNT = pa.decimal128(18, 2)

SCHEMAS: dict[str, pa.Schema] = {
    "contacts": pa.schema(
        [
            ("contact_pk", pa.string()),
            ("company_pk", pa.string()),
            ("email_pk", pa.string()),
            ("phone_pk", pa.string()),
            ("age_band", pa.string()),
            ("postal_prefix", pa.string()),
            ("country", pa.string()),
            ("lifecycle_stage", pa.string()),
            ("created_on", pa.date32()),
        ]
    ),
    "companies": pa.schema(
        [
            ("company_pk", pa.string()),
            ("industry", pa.string()),
            ("employee_band", pa.string()),
            ("country", pa.string()),
            ("created_on", pa.date32()),
        ]
    ),
    "deals": pa.schema(
        [
            ("deal_pk", pa.string()),
            ("contact_pk", pa.string()),
            ("company_pk", pa.string()),
            ("stage", pa.string()),
            ("pipeline", pa.string()),
            ("amount", AMOUNT),
            ("currency", pa.string()),
            ("created_on", pa.date32()),
            ("close_date", pa.date32()),
        ]
    ),
    "tickets": pa.schema(
        [
            ("ticket_pk", pa.string()),
            ("contact_pk", pa.string()),
            ("subject", pa.string()),
            ("description", pa.string()),
            ("channel", pa.string()),
            ("priority", pa.string()),
            ("status", pa.string()),
            ("created_on", pa.date32()),
            ("solved_on", pa.date32()),
            ("resolution_hours", pa.float64()),
            ("satisfaction", pa.string()),
        ]
    ),
}

# The marts' contracts, column order included, as the publish step reads them.
MART_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "tickets": [
        ("ticket_pk", "VARCHAR"),
        ("contact_pk", "VARCHAR"),
        ("channel", "VARCHAR"),
        ("priority", "VARCHAR"),
        ("status", "VARCHAR"),
        ("satisfaction", "VARCHAR"),
        ("created_on", "DATE"),
        ("created_month", "VARCHAR"),
        ("solved_on", "DATE"),
        ("is_solved", "BOOLEAN"),
        ("resolution_hours", "DOUBLE"),
        ("resolution_bucket", "VARCHAR"),
    ],
    "deal_pipeline": [
        ("deal_pk", "VARCHAR"),
        ("contact_pk", "VARCHAR"),
        ("company_pk", "VARCHAR"),
        ("stage", "VARCHAR"),
        ("pipeline", "VARCHAR"),
        ("region", "VARCHAR"),
        ("amount", "DECIMAL(18,2)"),
        ("currency", "VARCHAR"),
        ("created_on", "DATE"),
        ("close_date", "DATE"),
        ("is_closed", "BOOLEAN"),
        ("is_won", "BOOLEAN"),
    ],
    "customers": [
        ("contact_pk", "VARCHAR"),
        ("company_pk", "VARCHAR"),
        ("age_band", "VARCHAR"),
        ("country", "VARCHAR"),
        ("region", "VARCHAR"),
        ("lifecycle_stage", "VARCHAR"),
        ("created_on", "DATE"),
        ("ticket_count", "BIGINT"),
        ("deal_count", "BIGINT"),
        ("won_amount", "DECIMAL(18,2)"),
    ],
}

UNIT_TESTS = {
    "unit_test.crmshield.tickets.test_tickets_resolution_bucket_edges",
    "unit_test.crmshield.tickets.test_tickets_created_month_and_stale_solve_date",
    "unit_test.crmshield.int_deals_joined_to_accounts.test_int_deals_region_fallback",
    "unit_test.crmshield.customers.test_customers_zero_fill",
}


def pk(domain: str, n: int) -> str:
    """A pseudonym in the privacy zone's format, ``v1_<64 hex>``."""
    return "v1_" + hashlib.sha256(f"{domain}:{n}".encode()).hexdigest()


C1, C2, C3, C4 = (pk("contact", i) for i in range(1, 5))
CO1, CO2 = pk("company", 1), pk("company", 2)


def _rows() -> dict[str, list[dict[str, Any]]]:
    contacts: list[dict[str, Any]] = [
        # c1 lives in the US but their deal's company is German
        dict(contact_pk=C1, company_pk=CO1, age_band="25-34", postal_prefix="100",
             country="US", lifecycle_stage="customer", created_on=D(2024, 1, 5)),
        dict(contact_pk=C2, company_pk=None, age_band="65+", postal_prefix="SW1",
             country="GB", lifecycle_stage="lead", created_on=D(2024, 2, 6)),
        dict(contact_pk=C3, company_pk=CO2, age_band="unknown", postal_prefix="20",
             country="AU", lifecycle_stage="opportunity", created_on=D(2024, 3, 7)),
        # c4 has neither tickets nor deals
        dict(contact_pk=C4, company_pk=None, age_band="45-54", postal_prefix="750",
             country="FR", lifecycle_stage="subscriber", created_on=D(2024, 4, 8)),
    ]  # fmt: skip
    companies: list[dict[str, Any]] = [
        dict(company_pk=CO1, industry="COMPUTER_SOFTWARE", employee_band="10-49",
             country="DE", created_on=D(2023, 1, 1)),
        dict(company_pk=CO2, industry="RETAIL", employee_band="1000+",
             country="CA", created_on=D(2023, 5, 1)),
    ]  # fmt: skip
    deals: list[dict[str, Any]] = [
        dict(deal_pk=pk("deal", 1), contact_pk=C1, company_pk=CO1, stage="closedwon",
             pipeline="default", amount=Decimal("1000.50"), currency="USD",
             created_on=D(2024, 1, 10), close_date=D(2024, 2, 1)),
        dict(deal_pk=pk("deal", 2), contact_pk=C1, company_pk=None, stage="closedlost",
             pipeline="default", amount=Decimal("20.00"), currency="USD",
             created_on=D(2024, 1, 11), close_date=D(2024, 2, 2)),
        dict(deal_pk=pk("deal", 3), contact_pk=C2, company_pk=None, stage="contractsent",
             pipeline="default", amount=None, currency="EUR",
             created_on=D(2024, 2, 1), close_date=None),
        dict(deal_pk=pk("deal", 4), contact_pk=C3, company_pk=CO2, stage="closedwon",
             pipeline="enterprise", amount=Decimal("300.25"), currency="AUD",
             created_on=D(2024, 3, 10), close_date=D(2024, 4, 1)),
        # the privacy job keeps deals without an associated contact
        dict(deal_pk=pk("deal", 5), contact_pk=None, company_pk=CO2, stage="appointmentscheduled",
             pipeline="default", amount=Decimal("5.00"), currency="CAD",
             created_on=D(2024, 5, 1), close_date=None),
    ]  # fmt: skip
    tickets: list[dict[str, Any]] = [
        dict(ticket_pk=pk("ticket", 1), contact_pk=C1, subject="Invoice for <PERSON>",
             description="Reach me at <EMAIL>", channel="email", priority="low",
             status="solved", created_on=D(2024, 3, 1), solved_on=D(2024, 3, 1),
             resolution_hours=2.5, satisfaction="good"),
        dict(ticket_pk=pk("ticket", 2), contact_pk=C1, subject="Login", description="x",
             channel="web", priority="normal", status="open", created_on=D(2024, 3, 2),
             solved_on=None, resolution_hours=None, satisfaction="unoffered"),
        dict(ticket_pk=pk("ticket", 3), contact_pk=C3, subject="Refund", description="y",
             channel="chat", priority="urgent", status="closed", created_on=D(2024, 12, 31),
             solved_on=D(2025, 1, 3), resolution_hours=70.0, satisfaction="bad"),
        dict(ticket_pk=pk("ticket", 4), contact_pk=C2, subject="Call back <PHONE>",
             description="z", channel="voice", priority="high", status="solved",
             created_on=D(2024, 1, 15), solved_on=D(2024, 1, 24), resolution_hours=200.0,
             satisfaction="offered"),
    ]  # fmt: skip
    return {"contacts": contacts, "companies": companies, "deals": deals, "tickets": tickets}


def write_privacy_zone(privacy: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Write each entity as ``<entity>/part-00000-*.parquet`` plus Spark's ``_SUCCESS``."""
    for entity, schema in SCHEMAS.items():
        folder = privacy / entity
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows[entity], schema=schema)
        pq.write_table(table, folder / "part-00000-test.snappy.parquet")
        (folder / "_SUCCESS").write_text("")


def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_build_creates_marts_with_contracts_and_derived_values(data_dir: Path) -> None:
    settings = Settings.from_env(data_dir)
    write_privacy_zone(settings.privacy, _rows())

    result = run_dbt(settings)

    assert isinstance(result, TransformResult)
    assert result.success
    assert settings.warehouse.is_file()
    assert result.mart_row_counts == {"customers": 4, "deal_pipeline": 5, "tickets": 4}
    # 4 staging views + 3 mart tables (intermediates are ephemeral)
    assert (result.models_passed, result.models_failed) == (7, 0)
    assert result.tests_passed > 50
    assert result.tests_failed == 0
    # a deal without a contact is reported, not fatal
    assert [n.name for n in result.warned_nodes] == ["not_null_stg_privacy__deals_contact_pk"]
    # the dbt unit tests run as part of `build`
    unit = {n.unique_id: n.status for n in result.nodes if n.resource_type == "unit_test"}
    assert unit == dict.fromkeys(UNIT_TESTS, "pass")
    assert result.unit_tests_passed == len(UNIT_TESTS)
    # artifacts stay under the data dir, never in the source tree
    assert (data_dir / "warehouse" / "dbt_target" / "run_results.json").is_file()
    assert (data_dir / "warehouse" / "dbt_logs" / "dbt.log").is_file()
    manifest_entry = json.loads(json.dumps(result.to_dict()))
    assert manifest_entry["counts"]["unit_tests_passed"] == len(UNIT_TESTS)
    assert manifest_entry["mart_row_counts"]["tickets"] == 4
    assert manifest_entry["counts"]["tests_warned"] == 1

    # exact contract columns; free text never reaches a mart
    for mart, columns in MART_COLUMNS.items():
        described = query(settings, f"describe marts.{mart}")
        assert [(name, dtype) for name, dtype, *_ in described] == columns, mart
    tables = query(settings, "select table_schema, table_name from information_schema.tables order by all")
    assert [t for t in tables if t[0] == "marts"] == [
        ("marts", "customers"),
        ("marts", "deal_pipeline"),
        ("marts", "tickets"),
    ]

    tickets = {
        row[0]: row[1:]
        for row in query(
            settings,
            "select ticket_pk, created_month, is_solved, resolution_bucket, resolution_hours from marts.tickets",
        )
    }
    assert tickets == {
        pk("ticket", 1): ("2024-03", True, "<4h", 2.5),
        pk("ticket", 2): ("2024-03", False, None, None),
        pk("ticket", 3): ("2024-12", True, "1-3d", 70.0),
        pk("ticket", 4): ("2024-01", True, ">7d", 200.0),
    }

    deals = {
        row[0]: row[1:]
        for row in query(settings, "select deal_pk, region, is_closed, is_won, amount from marts.deal_pipeline")
    }
    assert deals == {
        pk("deal", 1): ("EMEA", True, True, Decimal("1000.50")),  # company in DE wins over US
        pk("deal", 2): ("AMER", True, False, Decimal("20.00")),  # no company: contact's US
        pk("deal", 3): ("EMEA", False, False, None),  # no company: contact's GB
        pk("deal", 4): ("AMER", True, True, Decimal("300.25")),  # company in CA over AU
        pk("deal", 5): ("AMER", False, False, Decimal("5.00")),  # no contact: company's CA
    }

    customers = {
        row[0]: row[1:]
        for row in query(
            settings,
            "select contact_pk, region, ticket_count, deal_count, won_amount from marts.customers",
        )
    }
    assert customers == {
        C1: ("AMER", 2, 2, Decimal("1000.50")),
        C2: ("EMEA", 1, 1, Decimal("0.00")),
        C3: ("APAC", 1, 1, Decimal("300.25")),
        C4: ("EMEA", 0, 0, Decimal("0.00")),
    }


def test_bad_privacy_input_fails_build_naming_the_tests(data_dir: Path) -> None:
    settings = Settings.from_env(data_dir)
    write_privacy_zone(settings.privacy, _rows())
    run_dbt(settings)
    good = query(settings, "select count(*), sum(ticket_count) from marts.customers")
    rows = _rows()
    rows["tickets"][0]["channel"] = "fax"
    rows["tickets"][1]["contact_pk"] = None
    write_privacy_zone(settings.privacy, rows)

    with pytest.raises(TransformError) as caught:
        run_dbt(settings)

    error = caught.value
    message = str(error)
    assert "test.crmshield.accepted_values_stg_privacy__tickets_channel" in message
    assert "test.crmshield.not_null_stg_privacy__tickets_contact_pk" in message
    failed = {n.name for n in error.failures}
    assert failed == {
        "accepted_values_stg_privacy__tickets_channel__email__web__chat__voice__api",
        "not_null_stg_privacy__tickets_contact_pk",
    }
    assert all(n.failures == 1 for n in error.failures)
    # the marts built on bad tickets are skipped, not published
    assert error.result is not None
    skipped = {n.unique_id for n in error.result.nodes if n.status == "skipped"}
    assert {"model.crmshield.tickets", "model.crmshield.customers"} <= skipped
    assert error.result.to_dict()["counts"]["tests_failed"] == 2
    # the failed build never replaced the last good warehouse, and left no build file behind
    assert query(settings, "select count(*), sum(ticket_count) from marts.customers") == good
    assert sorted(p.name for p in settings.warehouse.parent.glob(".building-*")) == []
