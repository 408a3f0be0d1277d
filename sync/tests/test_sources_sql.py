"""SQL source on SQLite (a temporary file) and on the test session's real PostgreSQL: tables, views
and queries, value conversion, safe identifiers, read-only access, streaming and secret-free errors."""

import datetime as dt
import sqlite3
import tracemalloc
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from sqlalchemy.engine import URL

from sync.sources import SourceConfigError, SourceError, SqlSource, open_source

NAMES = ["Begoña Núñez", "Jürgen Müller", "Łukasz Żółć", "Ayşe Yılmaz", "Nguyễn Thị Minh Khai"]  # noqa: RUF001


def sql_source(dsn: str, **config) -> SqlSource:
    full = {"kind": "sql", "dsn_secret": "HR_DB_DSN", "id_column": "employee_id", **config}
    return open_source(full, secrets={"HR_DB_DSN": dsn}.__getitem__)


@pytest.fixture
def sqlite_dsn(tmp_path) -> str:
    path = tmp_path / "hr.db"
    db = sqlite3.connect(path)
    db.execute(
        'CREATE TABLE "People List" (employee_id TEXT, name TEXT, active BOOLEAN, grade INTEGER, '
        "salary NUMERIC, hired DATE, manager TEXT, photo BLOB)"
    )
    rows = [
        (f"E{i}", name, i % 2, i, 1000.5 * i, f"2020-01-0{i + 1}", None, None) for i, name in enumerate(NAMES)
    ]
    db.executemany('INSERT INTO "People List" VALUES (?, ?, ?, ?, ?, ?, ?, ?)', rows)
    db.execute("INSERT INTO \"People List\" (employee_id, name, photo) VALUES ('  ', 'No Id', NULL)")
    db.execute("INSERT INTO \"People List\" (employee_id, name, photo) VALUES ('E9', 'Bad Bytes', x'4aff')")
    db.execute('CREATE VIEW active_people AS SELECT employee_id, name FROM "People List" WHERE active = 1')
    db.commit()
    db.close()
    return f"sqlite:///{path}"


def test_sqlite_table_with_a_name_needing_quotes(sqlite_dsn):
    records = list(sql_source(sqlite_dsn, table="People List").records())
    assert [r.external_id for r in records] == ["", "E0", "E1", "E2", "E3", "E4", "E9"]  # ordered by id
    assert [r.origin for r in records][:2] == ["row 1", "row 2"]
    by_id = {r.external_id: r for r in records}
    assert [by_id[f"E{i}"].fields["name"] for i in range(5)] == NAMES
    assert by_id["E1"].fields["active"] == "1"
    assert by_id["E0"].fields["manager"] == ""
    assert by_id["E2"].fields["grade"] == "2"
    assert records[0].error == "row 1: employee_id is empty"
    assert by_id["E9"].error == "row 7: column photo is not valid UTF-8 (byte 0xff)"
    assert all(by_id[f"E{i}"].error is None for i in range(5))


def test_sqlite_view_and_query(sqlite_dsn):
    view = [r.external_id for r in sql_source(sqlite_dsn, table="active_people").records()]
    assert view == ["E1", "E3"]
    query = sql_source(
        sqlite_dsn, query="SELECT employee_id, name || '!' AS name FROM \"People List\" WHERE grade > 2"
    )
    assert [(r.external_id, r.fields["name"]) for r in query.records()] == [
        (f"E{i}", NAMES[i] + "!") for i in (3, 4)
    ]


def test_sqlite_is_opened_read_only(sqlite_dsn, tmp_path):
    sneaky = "WITH x AS (SELECT 1) INSERT INTO \"People List\" (employee_id) SELECT 'Z' FROM x"
    with pytest.raises(SourceError, match=r"readonly|read-only|query_only"):
        list(sql_source(sqlite_dsn, query=sneaky).records())
    db = sqlite3.connect(tmp_path / "hr.db")
    assert db.execute('SELECT count(*) FROM "People List"').fetchone() == (7,)
    db.close()


def test_identifiers_are_never_interpolated(sqlite_dsn, tmp_path):
    with pytest.raises(SourceError, match="no such table or view"):
        list(sql_source(sqlite_dsn, table='People List"; DROP TABLE "People List"; --').records())
    db = sqlite3.connect(tmp_path / "hr.db")
    assert db.execute('SELECT count(*) FROM "People List"').fetchone() == (7,)
    db.close()


def test_missing_id_column_and_missing_file_fail_the_source(sqlite_dsn, tmp_path):
    with pytest.raises(SourceError, match="id column 'staff_no' not found"):
        list(sql_source(sqlite_dsn, table="People List", id_column="staff_no").records())
    with pytest.raises(SourceError, match="id column 'staff_no' not found"):
        list(sql_source(sqlite_dsn, query='SELECT name FROM "People List"', id_column="staff_no").records())
    with pytest.raises(SourceError, match="does not exist"):
        list(sql_source(f"sqlite:///{tmp_path / 'missing.db'}", table="people").records())
    assert not (tmp_path / "missing.db").exists()


def test_sql_errors_become_source_errors(sqlite_dsn):
    with pytest.raises(SourceError, match="no such column"):
        list(sql_source(sqlite_dsn, query='SELECT nope FROM "People List"').records())


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"table": "people"}, "dsn_secret"),
        ({"dsn_secret": "HR_DB_DSN"}, "table"),
        ({"dsn_secret": "HR_DB_DSN", "table": "a", "query": "SELECT 1"}, "table"),
        ({"dsn_secret": "HR_DB_DSN", "query": "DELETE FROM people"}, "query"),
        ({"dsn_secret": "HR_DB_DSN", "table": "a", "dsn": "sqlite://"}, "dsn"),
    ],
)
def test_invalid_config_names_the_key(config, named):
    with pytest.raises(SourceConfigError, match=named):
        open_source({"kind": "sql", "id_column": "id", **config}, secrets=lambda name: "sqlite://")


def test_a_bad_dsn_is_reported_without_its_value():
    with pytest.raises(SourceConfigError, match="HR_DB_DSN") as info:
        sql_source("not a url with pass=hunter2", table="people")
    assert "hunter2" not in str(info.value)


def test_passwords_never_appear_in_describe_or_errors(tmp_path):
    dsn = f"postgresql+psycopg://hub:hunter2@/nodb?host={tmp_path}"
    source = sql_source(dsn, table="people")
    assert "hunter2" not in source.describe()
    with pytest.raises(SourceError) as info:
        list(source.records())
    assert "hunter2" not in str(info.value)


def test_sqlite_streams_a_large_table_in_bounded_memory(tmp_path):
    path = tmp_path / "big.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE people (employee_id TEXT, name TEXT, email TEXT)")
    db.executemany(
        "INSERT INTO people VALUES (?, ?, ?)",
        ((f"E{n:06d}", f"Nguyễn {n}", f"u{n}@example.org") for n in range(20_000)),
    )
    db.commit()
    db.close()
    source = sql_source(f"sqlite:///{path}", table="people")
    tracemalloc.start()
    try:
        count = sum(1 for record in source.records() if record.error is None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 10 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


# --- PostgreSQL ------------------------------------------------------------------------------------


def postgres_dsn() -> str:
    settings = connection.settings_dict
    host = settings.get("HOST") or settings.get("OPTIONS", {}).get("host", "")
    query = {"host": host} if host.startswith("/") else {}
    return URL.create(
        "postgresql+psycopg",
        username=settings["USER"] or None,
        password=settings.get("PASSWORD") or None,
        host=None if host.startswith("/") else host or None,
        port=int(settings["PORT"]) if settings.get("PORT") and not host.startswith("/") else None,
        database=settings["NAME"],
        query=query,
    ).render_as_string(hide_password=False)


@pytest.fixture
def pg_schema():
    """A throwaway schema with a table whose name needs quoting; committed so SQLAlchemy's own
    connection sees it."""
    schema = f"hr_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{schema}"')
        cursor.execute(
            f'CREATE TABLE "{schema}"."Staff" (employee_id text, name text, active boolean, grade integer, '
            "salary numeric(10, 2), hired date, updated timestamptz, manager text)"
        )
        for i, name in enumerate(NAMES):
            cursor.execute(
                f'INSERT INTO "{schema}"."Staff" VALUES (%s, %s, %s, %s, %s, %s, %s, NULL)',  # noqa: S608
                [f"E{i}", name, i % 2 == 1, i, Decimal("1000.50") * i, dt.date(2020, 1, i + 1),
                 dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)],
            )  # fmt: skip
        cursor.execute(
            f'INSERT INTO "{schema}"."Staff" (employee_id, name) '  # noqa: S608
            "SELECT 'B' || lpad(n::text, 6, '0'), 'Person ' || n FROM generate_series(1, 20000) AS n"
        )
        cursor.execute(
            f'CREATE VIEW "{schema}".active AS SELECT employee_id, name FROM "{schema}"."Staff" WHERE active'  # noqa: S608
        )
        cursor.execute(
            f'CREATE FUNCTION "{schema}".purge() RETURNS text LANGUAGE sql AS '  # noqa: S608
            f'$$ DELETE FROM "{schema}"."Staff"; SELECT \'gone\'::text $$'
        )
    yield schema
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_postgres_table_view_and_query(pg_schema):
    dsn = postgres_dsn()
    records = {r.external_id: r for r in sql_source(dsn, table="Staff", schema=pg_schema).records()}
    assert len(records) == 20_005
    assert [records[f"E{i}"].fields["name"] for i in range(5)] == NAMES
    first = records["E1"].fields
    assert (first["active"], first["grade"], first["salary"], first["hired"]) == (
        "1",
        "1",
        "1000.50",
        "2020-01-02",
    )
    assert first["updated"].startswith("2024-05-01T12:30:00")
    assert first["manager"] == ""
    assert records["B000001"].fields["active"] == ""

    view = sql_source(dsn, table="active", schema=pg_schema)
    assert [r.external_id for r in view.records()] == ["E1", "E3"]

    query = sql_source(
        dsn,
        query=f'SELECT employee_id, name FROM "{pg_schema}"."Staff" WHERE grade >= 3 ORDER BY 1',  # noqa: S608
    )
    assert [r.fields["name"] for r in query.records()] == NAMES[3:]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_postgres_transaction_is_read_only(pg_schema):
    # A SELECT can still write through a function; only a read-only transaction stops that.
    sneaky = f'SELECT "{pg_schema}".purge() AS employee_id'
    with pytest.raises(SourceError, match="read-only transaction"):
        list(sql_source(postgres_dsn(), query=sneaky).records())
    cte = f'WITH gone AS (DELETE FROM "{pg_schema}"."Staff" RETURNING *) SELECT * FROM gone'  # noqa: S608
    with pytest.raises(SourceError):
        list(sql_source(postgres_dsn(), query=cte).records())
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{pg_schema}"."Staff"')  # noqa: S608
        assert cursor.fetchone() == (20_005,)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_postgres_streams_with_a_server_side_cursor(pg_schema):
    source = sql_source(postgres_dsn(), table="Staff", schema=pg_schema)
    tracemalloc.start()
    try:
        count = sum(1 for _ in source.records())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_005
    assert peak < 10 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_postgres_missing_table_fails_the_source(pg_schema):
    with pytest.raises(SourceError, match="no such table or view"):
        list(sql_source(postgres_dsn(), table="staff", schema=pg_schema).records())
