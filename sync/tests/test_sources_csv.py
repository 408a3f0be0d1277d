"""CSV source: encodings, BOM, sniffing, quoted newlines, bad rows reported by line, streaming."""

import io
import tracemalloc

import pytest

from sync.sources import CsvSource, SourceConfigError, SourceError, SourceRecord, open_source


def read(data: bytes, **config) -> list[SourceRecord]:
    source = open_source({"kind": "csv", "file": io.BytesIO(data), "id_column": "id", **config})
    return list(source.records())


def test_reads_a_path_with_header_and_keeps_values_unstripped(tmp_path):
    path = tmp_path / "people.csv"
    path.write_bytes(b"id,first,last\r\nE1, Ann ,Lee\r\nE2,Bob,Ode\r\n")
    source = open_source({"kind": "csv", "path": str(path), "id_column": "id"})
    assert isinstance(source, CsvSource)
    assert list(source.records()) == [
        SourceRecord("E1", {"id": "E1", "first": " Ann ", "last": "Lee"}, "line 2"),
        SourceRecord("E2", {"id": "E2", "first": "Bob", "last": "Ode"}, "line 3"),
    ]
    assert "people.csv" in source.describe()


def test_records_can_be_read_twice(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"id\nE1\n")
    source = open_source({"kind": "csv", "path": str(path), "id_column": "id"})
    assert list(source.records()) == list(source.records())
    upload = open_source({"kind": "csv", "file": io.BytesIO(b"id\nE1\n"), "id_column": "id"})
    assert len(list(upload.records())) == len(list(upload.records())) == 1


def test_unicode_round_trips_with_and_without_bom():
    names = "Begoña Núñez;Jürgen Müller;Łukasz Żółć;Ayşe Yılmaz;Nguyễn Thị Minh Khai"  # noqa: RUF001
    body = "id,name\n" + "".join(f"E{i},{name}\n" for i, name in enumerate(names.split(";")))
    for data in (body.encode(), b"\xef\xbb\xbf" + body.encode()):
        records = read(data)
        assert [r.fields["name"] for r in records] == names.split(";")
        assert all(r.error is None for r in records)
        assert "id" in records[0].fields  # the BOM is not part of the first column's name


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(delimiter):
    data = delimiter.join(["id", "name", "city"]) + "\n"
    data += delimiter.join(["E1", "Ann", "Paris"]) + "\n" + delimiter.join(["E2", "Bob", "Rome"]) + "\n"
    assert [r.fields["city"] for r in read(data.encode())] == ["Paris", "Rome"]


def test_sniffing_copes_with_quoted_newlines_and_ragged_rows():
    data = b'id;name;note\nE1;Ann;"two\nlines; here"\nE2;Bob;x\nE3;Cy\nE4;Di;y\n'
    records = read(data)
    assert [r.external_id for r in records] == ["E1", "E2", "E3", "E4"]
    assert records[0].fields["note"] == "two\nlines; here"


def test_sniffing_falls_back_to_comma_for_a_single_column():
    assert [r.external_id for r in read(b"id\nE1\nE2\n")] == ["E1", "E2"]


def test_explicit_delimiter_wins():
    records = read(b"id,name;x\nE1,Ann;y\n", delimiter=";", id_column="x")
    assert records[0].fields == {"id,name": "E1,Ann", "x": "y"}


def test_multiline_quoted_fields_keep_line_numbers_right():
    data = b'id,address,city\nE1,"1 Main St\r\nFlat 2\r\nBack door",Oslo\n'
    data += b'E2,"Quote ""here""",Bergen\n\nE3,x,Molde\n'
    records = read(data)
    assert [(r.external_id, r.origin) for r in records] == [
        ("E1", "line 2"),
        ("E2", "line 5"),
        ("E3", "line 7"),
    ]
    assert records[0].fields["address"] == "1 Main St\r\nFlat 2\r\nBack door"
    assert records[1].fields["address"] == 'Quote "here"'
    assert all(r.error is None for r in records)


def test_undecodable_bytes_mark_only_that_row_and_name_line_and_column():
    data = b"id,name\nE1,Ann\nE2,J\xfcrgen\nE3,Zo\xc3\xab\n"
    first, bad, last = read(data)
    assert first.error is None and last.error is None
    assert last.fields["name"] == "Zoë"
    assert bad.external_id == "E2"
    assert bad.error == "line 3: not valid UTF-8 (byte 0xfc at column 5)"
    assert bad.fields["name"] == "J\ufffdrgen"


def test_undecodable_bytes_inside_a_multiline_field_name_the_physical_line():
    data = b'id,note\nE1,"first\nsecond \xff"\nE2,ok\n'
    bad, good = read(data)
    assert bad.origin == "line 2"
    assert bad.error == "line 3: not valid UTF-8 (byte 0xff at column 8)"
    assert good.error is None and good.origin == "line 4"


def test_other_single_byte_encodings_are_allowed():
    records = read("id,name\nE1,Jürgen\n".encode("cp1252"), encoding="cp1252")
    assert records[0].fields["name"] == "Jürgen"


def test_wrong_field_count_and_missing_id_are_row_errors():
    data = b"id,name\nE1,Ann,extra\n,Bob\n  ,Cy\nE4\nE5,Ed\n"
    records = read(data)
    assert [r.error for r in records] == [
        "line 2: expected 2 fields, found 3",
        "line 3: id is empty",
        "line 4: id is empty",
        "line 5: expected 2 fields, found 1",
        None,
    ]
    assert records[3].external_id == "E4"


def test_external_id_is_stripped_but_fields_are_not():
    (record,) = read(b"id,name\n E1 , Ann\n")
    assert record.external_id == "E1"
    assert record.fields == {"id": " E1 ", "name": " Ann"}


def test_blank_lines_are_skipped():
    assert [r.origin for r in read(b"\n\nid,name\n\nE1,Ann\n\r\n\nE2,Bob")] == ["line 5", "line 8"]


def test_an_oversized_field_is_a_row_error_and_reading_goes_on():
    huge = b"x" * (200 * 1024)
    records = read(b"id,name\nE1,Ann\nE2," + huge + b"\nE3,Cy\n")
    assert [r.external_id for r in records if r.error is None] == ["E1", "E3"]
    (bad,) = [r for r in records if r.error]
    assert bad.error.startswith("line 3: cannot parse CSV")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"id,name,name\nE1,a,b\n", "duplicate column 'name'"),
        (b"id,,x\nE1,a,b\n", "column 2 has an empty name"),
        (b"code,name\nE1,a\n", "id column 'id' not found"),
        (b"id,n\xe4me\nE1,a\n", "CSV header: line 1: not valid UTF-8"),
        ("id,name\n".encode("utf-16"), "UTF-16"),
    ],
)
def test_header_problems_fail_the_source(data, message):
    with pytest.raises(SourceError, match=message):
        read(data)


def test_missing_file_fails_the_source(tmp_path):
    source = open_source({"kind": "csv", "path": str(tmp_path / "nope.csv"), "id_column": "id"})
    with pytest.raises(SourceError, match=r"cannot open the CSV file nope\.csv: No such file") as caught:
        list(source.records())
    assert str(tmp_path) not in str(caught.value)  # the server's folders are not for the pages


def test_a_binary_file_is_refused_in_words_at_its_header(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes(b"id,name\x00\x01\x02,\x00\x00\x00\rIHDR\x00\n1,a\n")
    source = open_source({"kind": "csv", "path": str(path), "id_column": "id"})
    with pytest.raises(SourceError) as caught:
        list(source.records())
    assert str(caught.value) == (
        "CSV header (line 1): a line break inside a field that is not in quotes; is this a CSV export "
        "(UTF-8 text, one person per line)?"
    )


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"kind": "csv", "id_column": "id"}, "path"),
        ({"kind": "csv", "path": "a.csv"}, "id_column"),
        ({"kind": "csv", "path": "a.csv", "id_column": "id", "delimeter": ";"}, "delimeter"),
        ({"kind": "csv", "path": "a.csv", "id_column": "id", "delimiter": ";;"}, "delimiter"),
        ({"kind": "csv", "path": "a.csv", "id_column": "id", "encoding": "klingon"}, "encoding"),
        ({"kind": "csv", "path": "a.csv", "id_column": "id", "encoding": "utf-16"}, "encoding"),
        ({"kind": "xls", "path": "a.csv", "id_column": "id"}, "kind"),
    ],
)
def test_invalid_config_names_the_key(config, named):
    with pytest.raises(SourceConfigError, match=named):
        open_source(config)


def test_a_large_file_streams_in_bounded_memory(tmp_path):
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("id,first,last,email\n")
        for n in range(20_000):
            out.write(f'E{n},Nguyễn {n},"Müller\nJr",user{n}@example.org\n')
    source = open_source({"kind": "csv", "path": str(path), "id_column": "id"})
    tracemalloc.start()
    try:
        count = sum(1 for record in source.records() if record.error is None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 2 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
