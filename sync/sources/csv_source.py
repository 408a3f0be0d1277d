"""People from a CSV file: a path on disk or an uploaded binary file object.

The file is read in binary, split into physical lines and decoded line by line, so one line with
undecodable bytes becomes one record with an error naming that line instead of failing the file.
Decoded lines are then fed to the `csv` module, which pulls further lines itself when a quoted
field spans several of them; UTF-8 never puts a quote, comma or newline byte inside a multi-byte
character, so decoding a bad line with replacement characters keeps the CSV structure intact.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .base import ConfigReader, SourceConfigError, SourceError, SourceRecord

_CHUNK = 64 * 1024
_SNIFF_BYTES = 16 * 1024
# A longer "line" is almost certainly a binary file or a file without newlines; refusing it keeps
# memory bounded.
_MAX_LINE_BYTES = 4 * 1024 * 1024
_DELIMITERS = ",;\t|"
_BOM = codecs.BOM_UTF8


class CsvSource:
    """A CSV file with a header row; one record per data row, keyed by `id_column`."""

    def __init__(
        self,
        *,
        id_column: str,
        path: str | os.PathLike | None = None,
        file: BinaryIO | None = None,
        delimiter: str | None = None,
        encoding: str = "utf-8",
    ) -> None:
        if (path is None) == (file is None):
            raise SourceConfigError("csv source config: give exactly one of 'path' or 'file'")
        self.path = Path(path) if path is not None else None
        self.file = file
        self.id_column = id_column
        self.delimiter = delimiter
        self.encoding = encoding

    @classmethod
    def from_config(cls, config: dict) -> CsvSource:
        reader = ConfigReader(config, "csv", {"path", "file", "id_column", "delimiter", "encoding"})
        delimiter = reader.text("delimiter", None)
        if delimiter is not None and len(delimiter) != 1:
            raise SourceConfigError("csv source config: 'delimiter' must be one character or null")
        encoding = reader.text("encoding", "utf-8")
        try:
            codec = codecs.lookup(encoding)
        except LookupError:
            raise SourceConfigError(f"csv source config: 'encoding' {encoding!r} is not known") from None
        if codec.name.startswith(("utf-16", "utf-32")):
            # Lines are split on the newline byte, which these encodings do not keep whole.
            raise SourceConfigError("csv source config: 'encoding' must be UTF-8 or a single-byte encoding")
        file = config.get("file")
        if file is not None and not hasattr(file, "read"):
            raise SourceConfigError("csv source config: 'file' must be a binary file object")
        path = reader.text("path", None)
        return cls(
            id_column=reader.text("id_column"),
            path=path,
            file=file,
            delimiter=delimiter,
            encoding=codec.name,
        )

    def describe(self) -> str:
        if self.path is not None:
            name = self.path.name
        else:
            name = os.path.basename(str(getattr(self.file, "name", "") or "")) or "uploaded file"
        delimiter = "sniffed" if self.delimiter is None else repr(self.delimiter)
        return f"CSV {name} (id column {self.id_column}, delimiter {delimiter}, {self.encoding})"

    def records(self) -> Iterator[SourceRecord]:
        if self.path is not None:
            try:
                stream = self.path.open("rb")
            except OSError as exc:
                raise SourceError(f"cannot open the CSV file {self.path.name}: {exc.strerror}") from None
            with stream:
                yield from self._read(stream)
        else:
            assert self.file is not None
            if self.file.seekable():
                self.file.seek(0)
            yield from self._read(self.file)

    def _read(self, stream: BinaryIO) -> Iterator[SourceRecord]:
        first = stream.read(_SNIFF_BYTES)
        if isinstance(first, str):
            raise SourceError("the CSV file was opened in text mode; open it in binary mode ('rb')")
        if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise SourceError("the CSV file is UTF-16; save it as UTF-8 (with or without BOM)")
        if first.startswith(_BOM):
            first = first[len(_BOM) :]
        delimiter = self.delimiter or _sniff_delimiter(first, self.encoding)
        lines = _DecodedLines(_physical_lines(first, stream), self.encoding)
        reader = csv.reader(lines, delimiter=delimiter)
        header = self._header(reader, lines)
        id_index = header.index(self.id_column)
        width = len(header)
        consumed = reader.line_num
        while True:
            try:
                row = next(reader)
                problem = None
            except StopIteration:
                return
            except csv.Error as exc:
                row, problem = None, _plain(exc)
            start, consumed = consumed + 1, reader.line_num
            origin = f"line {start}"
            bad_line = lines.first_error_between(start, consumed)
            if row is None:
                yield SourceRecord("", {}, origin, f"line {start}: cannot parse CSV ({problem})")
                continue
            if not row:
                continue  # a blank line
            fields = dict(zip(header, row, strict=False))
            external_id = row[id_index].strip() if id_index < len(row) else ""
            error = None
            if bad_line is not None:
                error = bad_line
            elif len(row) != width:
                error = f"line {start}: expected {width} fields, found {len(row)}"
            elif not external_id:
                error = f"line {start}: {self.id_column} is empty"
            yield SourceRecord(external_id, fields, origin, error)

    def _header(self, reader, lines: _DecodedLines) -> list[str]:
        try:
            row = next((row for row in reader if row), None)
        except csv.Error as exc:
            raise SourceError(
                f"CSV header (line {reader.line_num}): {_plain(exc)}; is this a CSV export (UTF-8 text, one "
                "person per line)?"
            ) from None
        if row is None:
            raise SourceError("the CSV file is empty: a header row is required")
        line = reader.line_num
        problem = lines.first_error_between(1, line)
        if problem:
            raise SourceError(f"CSV header: {problem}")
        header = [name.strip() for name in row]
        seen: set[str] = set()
        for position, name in enumerate(header, start=1):
            if not name:
                raise SourceError(f"CSV header (line {line}): column {position} has an empty name")
            if name in seen:
                raise SourceError(f"CSV header (line {line}): duplicate column {name!r}")
            seen.add(name)
        if self.id_column not in seen:
            raise SourceError(
                f"CSV header (line {line}): id column {self.id_column!r} not found "
                f"(columns: {', '.join(header)})"
            )
        return header


def _plain(error: csv.Error) -> str:
    """The csv module's complaint in words an operator understands."""
    text = str(error)
    if "NUL" in text:
        return "it contains NUL bytes, so it is a binary file, not text"
    if "new-line character seen in unquoted field" in text:
        return "a line break inside a field that is not in quotes"
    if "expected" in text and "after" in text:
        return "a quote in the middle of a field (fields with quotes must be wholly quoted)"
    return "its quoting is broken"


def _sniff_delimiter(sample: bytes, encoding: str) -> str:
    # Sniff whole lines only: a cut-off last line skews the Sniffer's consistency counts.
    cut = sample.rfind(b"\n")
    text = (sample[: cut + 1] if cut > 0 else sample).decode(encoding, errors="replace")
    try:
        return csv.Sniffer().sniff(text, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        return _consistent_delimiter(text)


def _consistent_delimiter(text: str) -> str:
    """The candidate that splits the header into several columns and most rows into as many.

    `csv.Sniffer` gives up on samples with quoted newlines or a few ragged rows, which real exports
    have; parsing with each candidate handles quoting properly."""
    best, best_score = ",", 0.0
    for delimiter in _DELIMITERS:
        try:
            rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row]
        except csv.Error:
            continue
        rows = rows[:-1] if len(rows) > 2 else rows  # the last one may be cut by the sample's end
        if not rows or len(rows[0]) < 2:
            continue
        score = sum(len(row) == len(rows[0]) for row in rows) / len(rows)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _physical_lines(first: bytes, stream: BinaryIO) -> Iterator[bytes]:
    """Split a binary stream into lines ending in b"\\n" (kept), reading in bounded chunks."""
    buffer = first
    eof = False
    while True:
        newline = buffer.find(b"\n")
        if newline >= 0:
            yield buffer[: newline + 1]
            buffer = buffer[newline + 1 :]
            continue
        if eof:
            if buffer:
                yield buffer
            return
        if len(buffer) > _MAX_LINE_BYTES:
            raise SourceError(f"a CSV line is longer than {_MAX_LINE_BYTES // (1024 * 1024)} MB")
        chunk = stream.read(_CHUNK)
        if chunk:
            buffer += chunk
        else:
            eof = True


class _DecodedLines:
    """Iterator of decoded lines for `csv.reader` that remembers which lines failed to decode.

    Only the error of lines the reader has not yet moved past are kept, so memory stays bounded."""

    def __init__(self, lines: Iterator[bytes], encoding: str) -> None:
        self._lines = lines
        self._encoding = encoding
        self._number = 0
        self._errors: dict[int, str] = {}
        self._label = "UTF-8" if encoding == "utf-8" else encoding

    def __iter__(self) -> _DecodedLines:
        return self

    def __next__(self) -> str:
        raw = next(self._lines)
        self._number += 1
        try:
            return raw.decode(self._encoding)
        except UnicodeDecodeError as exc:
            column = len(raw[: exc.start].decode(self._encoding, errors="replace")) + 1
            self._errors[self._number] = (
                f"line {self._number}: not valid {self._label} "
                f"(byte 0x{raw[exc.start]:02x} at column {column})"
            )
            return raw.decode(self._encoding, errors="replace")

    def first_error_between(self, first: int, last: int) -> str | None:
        """The decode error of the first bad line in first..last, forgetting all errors up to last."""
        found = None
        for number in sorted(n for n in self._errors if n <= last):
            message = self._errors.pop(number)
            if found is None and number >= first:
                found = message
        return found
