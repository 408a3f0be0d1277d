"""Mapping: config validation, normalisation, Moodle's validation rules, the hash and the payloads."""

import io
import tracemalloc

import pytest

from sync.mapping import (
    MappedRecord,
    Mapping,
    MappingConfigError,
    RecordProblem,
    email_problem,
    parse_languages,
    payload_for_create,
    payload_for_update,
)
from sync.sources import open_source
from sync.sources.base import SourceRecord

BASE = {
    "fields": {
        "username": {"source": "login", "transforms": ["strip", "lowercase"]},
        "email": "mail",
        "firstname": "first_name",
        "lastname": "last_name",
    }
}


def mapping(**overrides) -> Mapping:
    config = {**BASE, **overrides}
    config["fields"] = {**BASE["fields"], **overrides.get("fields", {})}
    return Mapping.from_config(config)


def record(external_id="E1", origin="line 2", error=None, **fields) -> SourceRecord:
    values = {"login": "alice", "mail": "alice@example.org", "first_name": "Alice", "last_name": "Ng"}
    values.update(fields)
    return SourceRecord(external_id, values, origin, error)


def mapped(result) -> MappedRecord:
    assert isinstance(result, MappedRecord), result
    return result


def problem(result) -> RecordProblem:
    assert isinstance(result, RecordProblem), result
    return result


# --- configuration ---------------------------------------------------------------------------------


def test_shorthand_means_stripped_source_updated_always():
    spec = mapping().fields["firstname"]
    assert (spec.source, spec.transforms, spec.update) == ("first_name", ("strip",), "always")


def test_defaults_are_idnumber_match_key_and_manual_auth():
    m = mapping()
    assert (m.match_key, m.auth) == ("idnumber", "manual")


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({**BASE, "match_key": "phone"}, "match_key"),
        ({**BASE, "auth": "Not A Plugin"}, "auth"),
        ({**BASE, "colour": 1}, "colour"),
        ({"fields": {k: v for k, v in BASE["fields"].items() if k != "email"}}, "fields.email"),
        ({"fields": {**BASE["fields"], "password": "pw"}}, "fields.password"),
        ({"fields": {**BASE["fields"], "city": {"source": "town", "transforms": ["shout"]}}}, "fields.city"),
        (
            {"fields": {**BASE["fields"], "city": {"source": "town", "update": "sometimes"}}},
            "fields.city.update",
        ),
        ({"fields": {**BASE["fields"], "city": {"source": "a", "constant": "b"}}}, "fields.city"),
        ({"fields": {**BASE["fields"], "city": {"source": "a", "colour": "b"}}}, "fields.city.colour"),
        ({"fields": {**BASE["fields"], "idnumber": "emp"}}, "fields.idnumber"),
        ({**BASE, "customfields": {"bad name!": "x"}}, "customfields.bad name!"),
        ({**BASE, "customfields": {"dept": 3}}, "customfields.dept"),
    ],
)
def test_invalid_config_names_the_key(config, named):
    with pytest.raises(MappingConfigError, match=named.replace(".", r"\.")):
        Mapping.from_config(config)


def test_idnumber_may_be_mapped_when_matching_by_username():
    m = Mapping.from_config(
        {**BASE, "match_key": "username", "fields": {**BASE["fields"], "idnumber": "emp"}}
    )
    assert mapped(m.apply(record(emp="X-9"))).payload["idnumber"] == "X-9"


# --- mapping and normalisation ---------------------------------------------------------------------


def test_payload_holds_mapped_fields_auth_and_external_id_as_idnumber():
    result = mapped(mapping(auth="saml2").apply(record(first_name="  Alice ", login=" ALICE ")))
    assert result.payload == {
        "username": "alice",
        "email": "alice@example.org",
        "firstname": "Alice",
        "lastname": "Ng",
        "auth": "saml2",
        "idnumber": "E1",
        "customfields": [],
    }
    assert result.external_id == "E1"
    assert result.origin == "line 2"


def test_transforms_constants_and_defaults():
    m = mapping(
        fields={
            "lastname": {"source": "last_name", "transforms": ["strip", "uppercase"]},
            "city": {"source": "town", "transforms": ["collapse_spaces", "title"]},
            "institution": {"constant": "North Campus"},
            "lang": {"source": "language", "transforms": ["strip", "lowercase"], "default": "en"},
        }
    )
    payload = mapped(m.apply(record(town="  new   york ", language=""))).payload
    assert payload["lastname"] == "NG"
    assert payload["city"] == "New York"
    assert payload["institution"] == "North Campus"
    assert payload["lang"] == "en"


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", 1), ("true", 1), ("YES", 1), ("0", 0), ("False", 0), ("no", 0), ("", 0)]
)
def test_suspended_becomes_an_integer(raw, expected):
    m = mapping(fields={"suspended": "inactive"})
    assert mapped(m.apply(record(inactive=raw))).payload["suspended"] == expected


def test_suspended_is_not_sent_unless_mapped():
    assert "suspended" not in mapped(mapping().apply(record())).payload


def test_country_is_uppercased_and_checked():
    m = mapping(fields={"country": "country"})
    assert mapped(m.apply(record(country="de"))).payload["country"] == "DE"
    assert problem(m.apply(record(country="Germany"))).field == "country"
    assert problem(m.apply(record(country="XX"))).field == "country"


def test_empty_lang_timezone_and_auth_are_left_to_moodle():
    m = mapping(fields={"lang": "lang", "timezone": "tz", "auth": "method", "city": "city"})
    payload = mapped(m.apply(record(lang="", tz="", method="", city=""))).payload
    assert "lang" not in payload and "timezone" not in payload
    assert payload["auth"] == "manual"
    assert payload["city"] == ""


def test_lang_timezone_and_per_record_auth_are_checked():
    m = mapping(fields={"lang": "lang", "timezone": "tz", "auth": "method"})
    ok = mapped(m.apply(record(lang="pt_br", tz="America/Sao_Paulo", method="oauth2"))).payload
    assert (ok["lang"], ok["timezone"], ok["auth"]) == ("pt_br", "America/Sao_Paulo", "oauth2")
    assert mapped(m.apply(record(lang="en", tz="99", method="ldap"))).payload["timezone"] == "99"
    assert problem(m.apply(record(lang="en-US", tz="99", method="ldap"))).field == "lang"
    assert problem(m.apply(record(lang="en", tz="Mars/Olympus", method="ldap"))).field == "timezone"
    assert problem(m.apply(record(lang="en", tz="99", method="SAML 2"))).field == "auth"


def test_customfields_are_a_sorted_list_and_create_only_names_them():
    m = mapping(
        customfields={
            "team": "team",
            "costcentre": {"source": "cc", "update": "create"},
        },
        fields={"department": {"source": "dept", "update": "create"}},
    )
    result = mapped(m.apply(record(team="Blue", cc="  C-17 ", dept="R&D")))
    assert result.payload["customfields"] == [
        {"type": "costcentre", "value": "C-17"},
        {"type": "team", "value": "Blue"},
    ]
    assert result.create_only == frozenset({"department", "profile_field_costcentre"})


def test_unicode_names_round_trip_unchanged():
    names = [
        ("Begoña", "Núñez"),
        ("Jürgen", "Müller"),
        ("Łukasz", "Żółć"),
        ("Ayşe", "Yılmaz"),  # noqa: RUF001 (the Turkish dotless i is the point)
        ("Nguyễn", "Thị Minh Khai"),
        ("Zoë", "Brontë-Åsberg"),
        ("Chloé", "Lefèvre"),
    ]
    for first, last in names:
        payload = mapped(mapping().apply(record(first_name=first, last_name=last))).payload
        assert (payload["firstname"], payload["lastname"]) == (first, last)


def test_nfc_transform_composes_decomposed_accents():
    m = mapping(fields={"firstname": {"source": "first_name", "transforms": ["strip", "nfc"]}})
    assert mapped(m.apply(record(first_name="Jose\u0301"))).payload["firstname"] == "José"


# --- validation ------------------------------------------------------------------------------------


def test_source_row_error_becomes_a_problem_naming_the_record():
    result = problem(mapping().apply(record(error="line 2: not valid UTF-8 (byte 0xfc at column 5)")))
    assert result.field == ""
    assert result.message == "record E1 (line 2): not valid UTF-8 (byte 0xfc at column 5)"


def test_row_error_without_id_names_the_line():
    result = problem(
        mapping().apply(record(external_id="", error="line 9: employee_id is empty", origin="line 9"))
    )
    assert result.message == "record at line 9: employee_id is empty"


@pytest.mark.parametrize("field", ["username", "email", "firstname", "lastname"])
def test_missing_required_field_is_a_problem(field):
    column = {"username": "login", "email": "mail", "firstname": "first_name", "lastname": "last_name"}[field]
    result = problem(mapping().apply(record(**{column: "   "})))
    assert result.field == field
    assert result.message.startswith(f"record E1 (line 2): {field} is required")
    assert repr(column) in result.message


def test_uppercase_username_without_lowercase_transform_is_refused():
    m = mapping(fields={"username": "login"})
    result = problem(m.apply(record(login="Alice")))
    assert result.field == "username"
    assert "must be lowercase" in result.message


@pytest.mark.parametrize(
    ("username", "culprit"),
    [("josé", '"é" at position 4'), ("ann smith", "a space at position 4"), ("a+b", '"+" at position 2'),
     ("o'brien", '"\'" at position 2')],
)  # fmt: skip
def test_username_characters_moodle_refuses_are_named(username, culprit):
    result = problem(mapping().apply(record(login=username)))
    assert result.field == "username"
    assert culprit in result.message


@pytest.mark.parametrize("username", ["alice", "a.b-c_d@x.org", "007", "x" * 100])
def test_valid_usernames(username):
    assert mapped(mapping().apply(record(login=username))).payload["username"] == username


def test_extended_username_chars_allows_unicode_but_still_requires_lowercase():
    m = mapping(extended_username_chars=True)
    assert mapped(m.apply(record(login="josé"))).payload["username"] == "josé"
    m = Mapping.from_config(
        {**BASE, "extended_username_chars": True, "fields": {**BASE["fields"], "username": "login"}}
    )
    assert problem(m.apply(record(login="José"))).field == "username"


def test_too_long_values_are_refused():
    assert problem(mapping().apply(record(login="x" * 101))).field == "username"
    assert problem(mapping().apply(record(first_name="A" * 101))).field == "firstname"
    assert problem(mapping().apply(record(last_name="B" * 101))).field == "lastname"
    assert mapped(mapping().apply(record(first_name="Ñ" * 100)))


def test_bad_email_message_names_record_and_field():
    result = problem(mapping().apply(record(external_id="E1234", origin="line 17", mail="bob@")))
    assert result.field == "email"
    assert result.message.startswith('record E1234 (line 17): email "bob@" is not a valid email address')


@pytest.mark.parametrize(
    "address",
    ["alice@example.org", "a.b+tag@sub.example.co.uk", "o'brien@example.ie", "x_y-z@x-y.example",
     "user@[192.168.0.1]", '"john doe"@example.org'.replace(" ", "."), "a@b.c0"],
)  # fmt: skip
def test_valid_emails(address):
    assert email_problem(address) is None


@pytest.mark.parametrize(
    "address",
    ["bob@", "@example.org", "bob", "bob@localhost", "bob@@example.org", "bob@exa mple.org",
     "bob.@example.org", ".bob@example.org", "bo..b@example.org", "bob@-example.org", "bob@example.123",
     "josé@example.org", "bob@exämple.org", "<bob>@example.org", "bob@example.org\n",
     "a" * 65 + "@example.org", "a" * 90 + "@example.org"],
)  # fmt: skip
def test_invalid_emails(address):
    assert email_problem(address) is not None


# --- hash ------------------------------------------------------------------------------------------


def test_hash_is_stable_across_whitespace_and_column_order():
    a = mapped(mapping().apply(record(first_name="Alice", login="alice")))
    b = SourceRecord(
        "E1",
        {"last_name": " Ng", "first_name": "Alice  ", "mail": "alice@example.org", "login": "ALICE"},
        "x",
    )
    assert mapped(mapping().apply(b)).hash == a.hash
    assert len(a.hash) == 64


def test_hash_changes_with_any_sent_value_including_auth_and_idnumber():
    base = mapped(mapping().apply(record())).hash
    assert mapped(mapping().apply(record(first_name="Alicia"))).hash != base
    assert mapped(mapping(auth="saml2").apply(record())).hash != base
    assert mapped(mapping().apply(record(external_id="E2"))).hash != base


# --- payloads for Moodle ---------------------------------------------------------------------------


def full_mapping() -> Mapping:
    return mapping(
        fields={
            "department": "dept",
            "city": {"source": "city", "update": "create"},
            "suspended": "inactive",
        },
        customfields={"team": "team", "badge": {"source": "badge", "update": "create"}},
    )


def test_payload_for_create_drops_empty_optional_values_and_suspended():
    # Moodle's create has no suspended parameter and refuses the whole call for it, even for 0.
    result = mapped(full_mapping().apply(record(dept="", city="Kraków", inactive="0", team="", badge="B1")))
    assert result.payload["suspended"] == 0
    assert payload_for_create(result) == {
        "username": "alice",
        "email": "alice@example.org",
        "firstname": "Alice",
        "lastname": "Ng",
        "auth": "manual",
        "idnumber": "E1",
        "city": "Kraków",
        "customfields": [{"type": "badge", "value": "B1"}],
    }


def moodle_user(**overrides) -> dict:
    user = {
        "id": 42,
        "username": "alice",
        "email": "Alice@Example.org",
        "firstname": "Alice",
        "lastname": "Ng",
        "auth": "manual",
        "idnumber": "E1",
        "department": "Sales",
        "city": "Warsaw",
        "suspended": False,
        "customfields": [
            {"type": "text", "shortname": "team", "value": "Blue"},
            {"type": "text", "shortname": "badge", "value": "OLD"},
        ],
    }
    user.update(overrides)
    return user


def test_update_is_empty_when_nothing_changed():
    result = mapped(
        full_mapping().apply(record(dept="Sales", city="Kraków", inactive="no", team="Blue", badge="B1"))
    )
    # The email differs only in case, city and badge are create-only: nothing to send.
    assert payload_for_update(result, moodle_user()) == {}


def test_update_sends_only_changed_always_fields_with_id():
    result = mapped(
        full_mapping().apply(record(dept="Marketing", city="Kraków", inactive="1", team="Red", badge="B1"))
    )
    assert payload_for_update(result, moodle_user()) == {
        "id": 42,
        "department": "Marketing",
        "suspended": 1,
        "customfields": [{"type": "team", "value": "Red"}],
    }


def test_update_matches_customfields_by_type_when_no_shortname_and_treats_missing_as_empty():
    result = mapped(full_mapping().apply(record(dept="Sales", city="x", inactive="0", team="Blue", badge="")))
    user = moodle_user(customfields=[{"type": "team", "value": "Blue"}])
    assert payload_for_update(result, user) == {}
    user = moodle_user(customfields=[], department=None)
    assert payload_for_update(result, user) == {
        "id": 42,
        "department": "Sales",
        "customfields": [{"type": "team", "value": "Blue"}],
    }


def test_update_compares_usernames_and_names_exactly():
    result = mapped(mapping().apply(record(first_name="Zoë")))
    user = moodle_user(firstname="Zoe", customfields=[])
    del user["department"], user["city"]
    assert payload_for_update(result, user) == {"id": 42, "firstname": "Zoë"}


# --- streaming -------------------------------------------------------------------------------------


def test_mapping_a_large_csv_runs_in_bounded_memory(tmp_path):
    path = tmp_path / "people.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("employee_id,login,mail,first_name,last_name,team\n")
        for n in range(20_000):
            out.write(f"E{n:06d},user{n},user{n}@example.org,Łukasz {n},Nguyễn,Team {n % 7}\n")
    source = open_source({"kind": "csv", "path": str(path), "id_column": "employee_id"})
    m = mapping(customfields={"team": "team"})
    tracemalloc.start()
    try:
        count = sum(isinstance(m.apply(rec), MappedRecord) for rec in source.records())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 5 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_uploaded_file_maps_like_a_path():
    data = "employee_id,login,mail,first_name,last_name\nE7,ayse,ayse@example.tr,Ayşe,Yılmaz\n".encode()  # noqa: RUF001
    source = open_source({"kind": "csv", "file": io.BytesIO(data), "id_column": "employee_id"})
    (only,) = [mapping().apply(rec) for rec in source.records()]
    assert mapped(only).payload["firstname"] == "Ayşe"


# --- what Moodle's parameter cleaning would refuse ---------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "tag"),
    [
        ("department", "R&D <Research>", "<Research>"),
        ("city", "Grade <3", "<3"),
        ("firstname", "<b>Al", "<b>"),
    ],
)
def test_a_text_field_with_an_html_tag_is_refused_naming_the_field(field, value, tag):
    columns = {"department": "dept", "city": "city", "firstname": "first_name"}
    config = {"fields": {"department": "dept", "city": "city"}}
    found = problem(mapping(**config).apply(record(**{columns[field]: value})))
    assert found.field == field
    assert f'{field} "{value}" contains an HTML tag ({tag}), which Moodle refuses' in found.message


def test_text_without_a_tag_passes_as_moodle_would_keep_it():
    result = mapped(mapping(fields={"department": "dept"}).apply(record(dept="R&D > 3 < 4")))
    assert result.payload["department"] == "R&D > 3 < 4"


def test_a_lang_the_site_has_not_installed_is_refused_with_the_installed_list():
    site_mapping = mapping(fields={"lang": "lang"}).for_site(["en", "de"])
    assert mapped(site_mapping.apply(record(lang="de"))).payload["lang"] == "de"
    found = problem(site_mapping.apply(record(lang="fr")))
    assert found.field == "lang"
    assert 'lang "fr" is not a language pack installed on the site (installed: de, en)' in found.message


def test_create_suspended_must_be_a_boolean():
    assert mapping(create_suspended=True).create_suspended is True
    with pytest.raises(MappingConfigError, match="'create_suspended' must be true or false"):
        mapping(create_suspended="yes")


def test_language_lists_are_cleaned_and_malformed_codes_named():
    assert parse_languages(" en, DE ,pt_br,en") == ["en", "de", "pt_br"]
    with pytest.raises(ValueError, match='"english" is not a Moodle language code'):
        parse_languages("en,english")
    with pytest.raises(ValueError, match="at least one"):
        parse_languages(" , ")


# --- value maps ------------------------------------------------------------------------------------

STATUS_MAP = {"source": "status", "values": {"left": 1, "active": 0, "on leave": 1}}


def test_a_value_map_translates_case_and_space_insensitively_then_the_field_is_checked():
    m = mapping(fields={"suspended": STATUS_MAP})
    assert mapped(m.apply(record(status="active"))).payload["suspended"] == 0
    assert mapped(m.apply(record(status="  LEFT "))).payload["suspended"] == 1
    assert mapped(m.apply(record(status="On Leave"))).payload["suspended"] == 1


def test_a_value_not_in_the_map_makes_only_that_record_invalid_naming_field_and_value():
    m = mapping(fields={"suspended": STATUS_MAP})
    results = [m.apply(record("E1", status="active")), m.apply(record("E2", "line 3", status="retired"))]
    assert mapped(results[0]).payload["suspended"] == 0
    found = problem(results[1])
    assert (found.external_id, found.field) == ("E2", "suspended")
    assert found.message == (
        'record E2 (line 3): status "retired" is not in the value map of suspended (left, active, on leave)'
    )


def test_an_empty_value_not_in_the_map_is_invalid_too():
    found = problem(mapping(fields={"suspended": STATUS_MAP}).apply(record(status="")))
    assert 'status "" is not in the value map of suspended' in found.message


def test_the_default_of_a_value_map_covers_any_value_it_does_not_name():
    m = mapping(fields={"suspended": {**STATUS_MAP, "default": 0}})
    assert mapped(m.apply(record(status="retired"))).payload["suspended"] == 0
    assert mapped(m.apply(record(status=""))).payload["suspended"] == 0
    assert mapped(m.apply(record(status="left"))).payload["suspended"] == 1


def test_a_mapped_value_still_goes_through_the_fields_own_check():
    m = mapping(fields={"suspended": {"source": "status", "values": {"left": "gone"}}})
    found = problem(m.apply(record(status="left")))
    assert found.field == "suspended"
    assert 'suspended "gone" must be 0/1' in found.message


def test_value_maps_work_for_text_and_custom_fields():
    m = mapping(
        fields={"department": {"source": "dept", "values": {"FIN": "Finance", "HR": "People"}}},
        customfields={"site": {"source": "loc", "values": {"b": "Berlin"}, "default": "Elsewhere"}},
    )
    payload = mapped(m.apply(record(dept="fin", loc="B"))).payload
    assert payload["department"] == "Finance"
    assert payload["customfields"] == [{"type": "site", "value": "Berlin"}]
    assert problem(m.apply(record(dept="IT", loc="b"))).field == "department"


def test_describe_shows_the_value_map_and_its_default():
    described = dict(mapping(fields={"suspended": {**STATUS_MAP, "default": 0}}).describe())
    assert described["suspended"] == (
        "column 'status' through the value map 'left' → '1', 'active' → '0', 'on leave' → '1'; otherwise '0'"
    )
    strict = dict(mapping(fields={"suspended": STATUS_MAP}).describe())
    assert strict["suspended"].endswith("; anything else is refused")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"source": "status", "values": ["left"]}, "'fields.suspended.values' must be a non-empty object"),
        ({"source": "status", "values": {}}, "'fields.suspended.values' must be a non-empty object"),
        ({"source": "status", "values": {"left": [1]}}, "'fields.suspended.values.left' must be a string"),
        ({"source": "status", "values": {"left": None}}, "'fields.suspended.values.left' must be a string"),
        ({"source": "status", "values": {"left": 1}, "default": 0.5}, "'fields.suspended.default' must be"),
        ({"constant": "1", "values": {"1": 1}}, "'fields.suspended.values' needs a 'source'"),
        ({"source": "status", "values": {"Left": 1, " left": 0}}, "'Left' and ' left'"),
    ],
)
def test_a_bad_value_map_is_refused_at_load_naming_the_key(spec, message):
    with pytest.raises(ValueError, match=message):
        mapping(fields={"suspended": spec})
