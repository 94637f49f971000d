"""`tollbooth catalog apply` against SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from billing.v1 import catalog_pb2
from tests.catalog.support import bearer_metadata, list_prices, list_products
from tollbooth.catalog import as_code, spec
from tollbooth.catalog import plan as planning
from tollbooth.catalog.fields import ProductFields
from tollbooth.catalog.plan import Plan
from tollbooth.db import Database
from tollbooth.db.models import Price, Product, Sequence
from tollbooth.errors import DomainError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "server" / "tollbooth" / "catalog" / "example_catalog.yaml"

CATALOG = {
    "products": [
        {
            "key": "pro",
            "name": "Pro",
            "entitlements": ["sso"],
            "prices": [
                {
                    "lookup_key": "pro_monthly",
                    "currency": "usd",
                    "unit_amount": 900,
                    "interval": "month",
                    "nickname": "Monthly",
                    "subscription_group": "plan",
                    "credit_grants": [
                        {"credit_type": "api_calls", "amount": "1000", "on_renewal": True}
                    ],
                },
                {
                    "lookup_key": "pro_pack",
                    "currency": "usd",
                    "unit_amount": 500,
                    "stackable": True,
                },
            ],
        },
        {
            "key": "team",
            "name": "Team",
            "prices": [
                {
                    "lookup_key": "team_monthly",
                    "currency": "usd",
                    "unit_amount": 4900,
                    "interval": "month",
                },
            ],
        },
    ],
}


def write(tmp_path: Path, document: dict, name: str = "catalog.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def apply(database_url: str, path: str, *flags: str) -> int:
    return as_code.main(["apply", path, "--database-url", database_url, *flags])


def rows(db, model, **where):  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        stmt = select(model).filter_by(**where).order_by(model.seq)
        return list(session.scalars(stmt))


def count(db, model) -> int:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_apply_creates_the_catalog_and_a_second_apply_changes_nothing(
    tmp_path, database_url, db, channel, capsys
):  # type: ignore[no-untyped-def]
    path = write(tmp_path, CATALOG)
    assert apply(database_url, path) == 0
    first = capsys.readouterr().out
    assert first.count("create product") == 2 and first.count("create price") == 3
    bearer = bearer_metadata(channel)
    products = list_products(channel, bearer).products
    assert [(p.name, p.key) for p in products] == [
        ("Pro", "pro"),
        ("Team", "team"),
    ]
    prices = list_prices(channel, products[0].product_id, bearer).prices
    assert [p.lookup_key for p in prices] == ["pro_monthly", "pro_pack"]
    assert prices[0].recurring.interval == catalog_pb2.RECURRING_INTERVAL_MONTH
    assert prices[0].credit_grants[0].on_purchase and prices[0].credit_grants[0].on_renewal
    before = [(p.id, p.updated_at) for p in rows(db, Price)]

    assert apply(database_url, path) == 0
    assert capsys.readouterr().out.strip() == "no changes"
    assert [(p.id, p.updated_at) for p in rows(db, Price)] == before


def test_example_catalog_applies_cleanly_twice(database_url, capsys):  # type: ignore[no-untyped-def]
    assert apply(database_url, str(EXAMPLE)) == 0
    assert "create product" in capsys.readouterr().out
    assert apply(database_url, str(EXAMPLE)) == 0
    assert capsys.readouterr().out.strip() == "no changes"


def test_dry_run_prints_the_diff_and_writes_nothing(tmp_path, database_url, db, capsys):  # type: ignore[no-untyped-def]
    path = write(tmp_path, CATALOG)
    assert apply(database_url, path, "--dry-run") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len([line for line in lines if line.startswith("create ")]) == 5
    assert "nothing written" in lines[-1]
    assert (count(db, Product), count(db, Price), count(db, Sequence)) == (0, 0, 0)


def test_changed_amount_replaces_the_price_and_moves_its_lookup_key(
    tmp_path, database_url, db, channel, capsys
):  # type: ignore[no-untyped-def]
    apply(database_url, write(tmp_path, CATALOG))
    (old,) = rows(db, Price, lookup_key="pro_monthly")
    changed = copy.deepcopy(CATALOG)
    changed["products"][0]["prices"][0]["unit_amount"] = 1200
    changed["products"][0]["prices"][1]["nickname"] = "Pack"  # mutable: in place
    pack_id = rows(db, Price, lookup_key="pro_pack")[0].id
    capsys.readouterr()
    assert apply(database_url, write(tmp_path, changed)) == 0
    out = capsys.readouterr().out
    assert f"archive price pro_monthly ({old.id})" in out

    monthly = rows(db, Price, lookup_key="pro_monthly")
    assert [(p.id == old.id, p.active, p.unit_amount) for p in monthly] == [
        (True, False, 900),
        (False, True, 1200),
    ]
    (pack,) = rows(db, Price, lookup_key="pro_pack")
    assert (pack.id, pack.nickname) == (pack_id, "Pack")
    public = list_prices(channel, old.product_id, bearer_metadata(channel)).prices
    assert [(p.lookup_key, p.unit_amount) for p in public] == [
        ("pro_monthly", 1200),
        ("pro_pack", 500),
    ]
    assert apply(database_url, write(tmp_path, changed)) == 0
    assert capsys.readouterr().out.strip() == "no changes"


def test_entries_missing_from_the_file_are_archived_only_with_archive_missing(
    tmp_path, database_url, db, capsys
):  # type: ignore[no-untyped-def]
    apply(database_url, write(tmp_path, CATALOG))
    smaller = copy.deepcopy(CATALOG)
    del smaller["products"][1]  # team
    del smaller["products"][0]["prices"][1]  # pro_pack
    path = write(tmp_path, smaller)
    capsys.readouterr()
    assert apply(database_url, path) == 0
    assert capsys.readouterr().out.strip() == "no changes"
    assert all(p.active for p in rows(db, Product)) and all(p.active for p in rows(db, Price))

    assert apply(database_url, path, "--archive-missing") == 0
    out = capsys.readouterr().out
    assert "archive product team" in out and "archive price pro_pack" in out
    assert {p.key: p.active for p in rows(db, Product)} == {
        "pro": True,
        "team": False,
    }
    assert not rows(db, Price, lookup_key="pro_pack")[0].active
    assert rows(db, Price, lookup_key="team_monthly")[0].active  # only its product was archived

    # Putting team back restores the same product.
    team_id = rows(db, Product, name="Team")[0].id
    assert apply(database_url, write(tmp_path, CATALOG)) == 0
    assert "restore product team" in capsys.readouterr().out
    assert rows(db, Product, name="Team")[0].id == team_id
    assert rows(db, Product, name="Team")[0].active


def test_invalid_file_exits_non_zero_and_writes_nothing(tmp_path, database_url, db, capsys):  # type: ignore[no-untyped-def]
    bad = copy.deepcopy(CATALOG)
    bad["products"][1]["prices"][0]["credit_grants"] = [{"credit_type": "x", "amount": "-1"}]
    assert apply(database_url, write(tmp_path, bad)) == 1
    assert "AMOUNT_INVALID" in capsys.readouterr().err
    assert count(db, Product) == 0


def test_a_product_created_by_rpc_with_a_files_key_is_adopted_not_duplicated(
    tmp_path, database_url, db, channel, capsys
):  # type: ignore[no-untyped-def]
    from tests.catalog.support import product

    made = product(channel, "Hand made", key="pro")
    capsys.readouterr()
    assert apply(database_url, write(tmp_path, CATALOG)) == 0
    assert "update product pro" in capsys.readouterr().out
    assert [p.id for p in rows(db, Product, key="pro")] == [made.product_id]
    assert rows(db, Product, key="pro")[0].name == "Pro"


def test_a_failing_step_rolls_back_the_steps_before_it(db):  # type: ignore[no-untyped-def]
    steps = Plan(
        (
            planning.CreateProduct("pro", ProductFields(name="Pro", position=1)),
            planning.ArchivePrice("gone", "price_missing", "missing from file"),
        )
    )
    with pytest.raises(DomainError) as exc, db.transaction() as session:
        as_code.execute(session, steps)
    assert exc.value.reason == "NOT_FOUND"
    assert count(db, Product) == 0


def test_module_runs_as_a_command(tmp_path, database_url):  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "server"), str(REPO / "clients")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tollbooth.catalog.as_code",
            "apply",
            write(tmp_path, CATALOG),
            "--dry-run",
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "create product pro" in done.stdout


def test_a_file_that_is_not_utf8_exits_1_with_one_line(tmp_path, database_url, db, capsys):  # type: ignore[no-untyped-def]
    path = tmp_path / "catalog.yaml"
    path.write_bytes("products:\n  - {key: pro, name: Pré}\n".encode("latin-1"))
    assert apply(database_url, str(path)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "UTF-8" in err and "Traceback" not in err
    assert count(db, Product) == 0


def test_a_nul_in_the_file_exits_1_naming_the_field_not_the_database(
    tmp_path, database_url, db, capsys
):  # type: ignore[no-untyped-def]
    bad = copy.deepcopy(CATALOG)
    bad["products"][0]["name"] = "P\x00ro"
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(bad, sort_keys=False))
    assert apply(database_url, str(path)) == 1
    err = capsys.readouterr().err
    assert "NUL" in err and "database" not in err
    assert count(db, Product) == 0


def test_the_same_file_applied_at_once_by_several_operators_is_applied_once(database_url):  # type: ignore[no-untyped-def]
    # Two deploys applying the catalog together: one applies it, the others find no changes
    # (never "a product already has key ..." from a plan made before the first one committed).
    import threading

    catalog = spec.parse(CATALOG)
    databases = [Database(database_url) for _ in range(3)]
    start = threading.Barrier(len(databases))
    outcomes: list[object] = [None] * len(databases)

    def go(i: int) -> None:
        start.wait()
        try:
            outcomes[i] = len(as_code.apply(databases[i], catalog).actions)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test compares
            outcomes[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(databases))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for database in databases:
            database.dispose()
    assert sorted(outcomes, key=repr) == sorted(
        [0] * (len(databases) - 1) + [len(as_code.plan(catalog, [], []).actions)], key=repr
    ), outcomes
    check = Database(database_url)
    try:
        assert count(check, Product) == len(CATALOG["products"])
    finally:
        check.dispose()


def _two_environments(tmp_path: Path, monkeypatch) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Test and live databases (SQLite files, migrated), their variables set: (test, live)."""
    from tests.conftest import make_env
    from tests.devstack import migrated_sqlite
    from tests.environments.test_settings import live

    test_url = migrated_sqlite(tmp_path / "test.db")
    live_url = migrated_sqlite(tmp_path / "live.db")
    env = make_env(test_url, BILLING_DATA_DIR=str(tmp_path / "data"), **live(tmp_path / "live.db"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    return test_url, live_url


def test_apply_with_environment_live_writes_the_live_database_only(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    test_url, live_url = _two_environments(tmp_path, monkeypatch)
    path = write(tmp_path, CATALOG)
    assert as_code.main(["apply", path, "--environment", "live"]) == 0
    for url, expected in ((live_url, len(CATALOG["products"])), (test_url, 0)):
        database = Database(url)
        try:
            assert count(database, Product) == expected, url
        finally:
            database.dispose()


def test_sync_stripe_refuses_another_environments_database(tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    # --sync-stripe links prices with the chosen environment's Stripe account (test by
    # default): test-mode price ids written into the live database would break live checkouts.
    _test_url, live_url = _two_environments(tmp_path, monkeypatch)
    path = write(tmp_path, CATALOG)
    assert as_code.main(["apply", path, "--sync-stripe", "--database-url", live_url]) == 2
    assert "--environment live" in capsys.readouterr().err
    database = Database(live_url)
    try:
        assert count(database, Product) == 0
    finally:
        database.dispose()


def test_dry_run_with_sync_stripe_says_the_sync_is_skipped(tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    # A dry run writes nothing, links included: it says so rather than skip the sync silently.
    test_url, _live_url = _two_environments(tmp_path, monkeypatch)
    path = write(tmp_path, CATALOG)
    argv = ["apply", path, "--environment", "test", "--sync-stripe", "--dry-run"]
    assert as_code.main(argv) == 0
    changes = capsys.readouterr().out.splitlines()
    assert as_code.main(["apply", path, "--environment", "test"]) == 0
    capsys.readouterr()
    assert as_code.main(argv) == 0
    unchanged = capsys.readouterr().out.splitlines()
    for lines in (changes, unchanged):
        skipped = [line for line in lines if "--sync-stripe" in line]
        assert len(skipped) == 1 and "dry run" in skipped[0], lines
    database = Database(test_url)
    try:
        assert rows(database, Price) and all(
            p.stripe_price_id is None for p in rows(database, Price)
        )
    finally:
        database.dispose()


@pytest.mark.parametrize(
    "variables",
    [
        {"BILLING_DATABASE_URL": "mysql://x/y"},
        {"BILLING_GRPC_PORT": "abc"},
        {"BILLING_LOG_LEVEL": "LOUD"},
    ],
    ids=["database-url", "port", "log-level"],
)
def test_an_unusable_setting_is_a_configuration_error_exit_2(
    tmp_path, monkeypatch, capsys, variables
):  # type: ignore[no-untyped-def]
    # As every other command (README, Configuration): one `configuration error: ...` line.
    monkeypatch.setenv("BILLING_DATA_DIR", str(tmp_path / "data"))
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    assert as_code.main(["apply", write(tmp_path, CATALOG), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error: ") and next(iter(variables)) in err


def test_the_live_environment_unconfigured_is_a_configuration_error(tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BILLING_DATA_DIR", str(tmp_path / "data"))
    assert as_code.main(["apply", write(tmp_path, CATALOG), "--environment", "live"]) == 2
    assert capsys.readouterr().err.startswith("configuration error: the live environment")


def test_a_priority_the_contract_cannot_carry_exits_1_and_writes_nothing(  # type: ignore[no-untyped-def]
    tmp_path, database_url, db, capsys
):
    bad = copy.deepcopy(CATALOG)
    grant = {"credit_type": "api", "amount": "1", "priority": 99_999_999_999}
    bad["products"][0]["prices"][0]["credit_grants"] = [grant]
    assert apply(database_url, write(tmp_path, bad)) == 1
    assert "priority" in capsys.readouterr().err
    assert count(db, Product) == 0


def test_a_hexadecimal_amount_exits_1_naming_the_field_and_writes_nothing(  # type: ignore[no-untyped-def]
    tmp_path, database_url, db, capsys
):
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "products:\n- key: pro\n  name: Pro\n  prices:\n"
        "  - {lookup_key: pro_monthly, currency: usd, unit_amount: 0x10}\n"
    )
    assert apply(database_url, str(path)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: price 'pro_monthly'.unit_amount") and "'0x10'" in err
    assert "Traceback" not in err
    assert count(db, Product) == 0
