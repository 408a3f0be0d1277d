"""People from a table, view or query of an external database, like Moodle's auth_db sync.

The DSN (with its password) comes from a secret named in the config, never from the config itself.
The hub only ever reads: PostgreSQL transactions are opened read-only, SQLite files are opened with
`mode=ro` and `query_only`, MySQL/MariaDB sessions are set read-only; other databases rely on the
account being read-only. Rows are streamed with a server-side cursor (`stream_results`) so a large
table never sits in memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from .base import ConfigReader, SourceConfigError, SourceError, SourceRecord, scalar_to_str

_BATCH_ROWS = 1000
# Statements a read-only source may run; anything else is refused before it reaches the database.
_READING = re.compile(r"^\s*(select|with|values|table)\b", re.IGNORECASE)


class SqlSource:
    """Rows of a table or view (reflected, so its name is quoted by SQLAlchemy) or of a SELECT query."""

    def __init__(
        self,
        *,
        dsn: str,
        id_column: str,
        table: str | None = None,
        query: str | None = None,
        schema: str | None = None,
        dsn_secret: str = "",
    ) -> None:
        if (table is None) == (query is None):
            raise SourceConfigError("sql source config: give exactly one of 'table' or 'query'")
        try:
            self.url = make_url(dsn)
        except ArgumentError:
            # The DSN itself may hold a password: name the variable, never the value.
            where = dsn_secret or "the secret"
            raise SourceConfigError(f"sql source config: the DSN in {where} is not a valid URL") from None
        self.id_column = id_column
        self.table = table
        self.query = query
        self.schema = schema
        self._password = self.url.password or ""

    @classmethod
    def from_config(cls, config: dict, *, secrets: Callable[[str], str]) -> SqlSource:
        reader = ConfigReader(config, "sql", {"dsn_secret", "table", "query", "id_column", "schema"})
        dsn_secret = reader.text("dsn_secret")
        query = reader.text("query", None)
        if query is not None and not _READING.match(query):
            raise SourceConfigError("sql source config: 'query' must be a SELECT (or WITH ... SELECT)")
        return cls(
            dsn=secrets(dsn_secret),
            dsn_secret=dsn_secret,
            id_column=reader.text("id_column"),
            table=reader.text("table", None),
            query=query,
            schema=reader.text("schema", None),
        )

    def describe(self) -> str:
        what = f"table {self.schema + '.' if self.schema else ''}{self.table}" if self.table else "query"
        where = self.url.render_as_string(hide_password=True)
        return f"SQL {what} on {where} (id column {self.id_column})"

    def records(self) -> Iterator[SourceRecord]:
        engine = self._engine()
        try:
            with engine.connect() as conn:
                if engine.dialect.name == "postgresql":
                    conn = conn.execution_options(postgresql_readonly=True)
                statement = self._statement(conn)
                result = conn.execution_options(stream_results=True, yield_per=_BATCH_ROWS).execute(statement)
                columns = list(result.keys())
                if len(set(columns)) != len(columns):
                    duplicate = next(c for c in columns if columns.count(c) > 1)
                    raise SourceError(f"{self.describe()}: the result has two columns named {duplicate!r}")
                if self.id_column not in columns:
                    names = ", ".join(columns)
                    missing = f"id column {self.id_column!r} not found (columns: {names})"
                    raise SourceError(f"{self.describe()}: {missing}")
                for number, row in enumerate(result, start=1):
                    yield self._record(columns, row, f"row {number}")
        except SQLAlchemyError as exc:
            raise SourceError(f"{self.describe()}: {self._scrub(_reason(exc))}") from None
        finally:
            engine.dispose()

    def _engine(self) -> Engine:
        url = self.url
        database = url.database or ""
        is_file = database not in ("", ":memory:") and not database.startswith("file:")
        if url.get_backend_name() == "sqlite" and is_file:
            if not Path(database).exists():
                raise SourceError(f"{self.describe()}: the SQLite file does not exist")
            # Read-only at the file level: even a bug in a query cannot write.
            path = quote(str(Path(database).resolve()))
            url = URL.create(url.drivername, database=f"file:{path}", query={"mode": "ro", "uri": "true"})
        try:
            engine = sa.create_engine(url, poolclass=NullPool, hide_parameters=True)
        except (ArgumentError, NoSuchModuleError) as exc:
            raise SourceError(f"{self.describe()}: {self._scrub(str(exc))}") from None
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_query_only)
        elif engine.dialect.name in ("mysql", "mariadb"):
            sa.event.listen(engine, "connect", _mysql_read_only)
        return engine

    def _statement(self, conn: sa.Connection) -> sa.Executable:
        if self.query is not None:
            return sa.text(self.query)
        assert self.table is not None
        try:
            table = sa.Table(self.table, sa.MetaData(), schema=self.schema, autoload_with=conn)
        except NoSuchTableError:
            raise SourceError(f"{self.describe()}: no such table or view") from None
        if self.id_column not in table.c:
            names = ", ".join(table.c.keys())
            raise SourceError(f"{self.describe()}: id column {self.id_column!r} not found (columns: {names})")
        # A stable order makes "row N" mean the same row from one run to the next.
        return sa.select(table).order_by(table.c[self.id_column])

    def _record(self, columns: list[str], row: sa.Row, origin: str) -> SourceRecord:
        fields: dict[str, str] = {}
        error = None
        for name, value in zip(columns, row, strict=True):
            if isinstance(value, bytes | bytearray | memoryview):
                try:
                    value = bytes(value).decode("utf-8")
                except UnicodeDecodeError as exc:
                    byte = exc.object[exc.start]
                    error = error or f"{origin}: column {name} is not valid UTF-8 (byte 0x{byte:02x})"
                    value = bytes(value).decode("utf-8", errors="replace")
            fields[name] = scalar_to_str(value)
        external_id = fields[self.id_column].strip()
        if error is None and not external_id:
            error = f"{origin}: {self.id_column} is empty"
        return SourceRecord(external_id, fields, origin, error)

    def _scrub(self, message: str) -> str:
        return message.replace(self._password, "***") if self._password else message


def _reason(exc: SQLAlchemyError) -> str:
    """The database's own words, without SQLAlchemy's statement dump and background links."""
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else str(exc)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[:3]) or "the database refused it without a reason"


def _sqlite_query_only(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only = ON")
    cursor.close()


def _mysql_read_only(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION TRANSACTION READ ONLY")
    cursor.close()
