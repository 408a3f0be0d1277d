"""The memberships part of a mapping: reading cohorts and courses from source columns, and refusing what
cannot work with a message that names the key, the record and the column."""

from __future__ import annotations

import re

import pytest

from integration_hub.testing import MAPPING
from sync.mapping import Mapping, MappingConfigError
from sync.membership_rules import memberships_hash, slug
from sync.sources.base import SourceRecord

RULES = {
    "cohorts": [
        {"source": "dept", "separator": ";", "idnumber": "dept-{slug}", "name": "Department of {value}"}
    ],
    "courses": [
        {"source": "courses", "separator": ";", "role_source": "role", "start": "from", "end": "until"}
    ],
}


def mapped(fields: dict[str, str], rules=RULES, roles=("student", "teacher")):
    mapping = Mapping.from_config({**MAPPING, "memberships": rules}).for_site(["en"], list(roles))
    base = {"login": "ana", "first": "Ana", "last": "Ruiz", "mail": "ana@example.edu", "lang": "en"}
    return mapping.apply(SourceRecord("E1", {**base, **fields}, "line 2"))


def test_cohorts_and_courses_come_from_list_columns_with_templates():
    result = mapped(
        {"dept": "Économie & Droit; Law", "courses": "CHEM101; BIO110;CHEM101", "role": "Teacher"}
    )
    got = [(d.kind, d.key, d.name, d.role) for d in result.memberships]
    assert got == [
        ("cohort", "dept-economie-droit", "Department of Économie & Droit", ""),
        ("cohort", "dept-law", "Department of Law", ""),
        ("course", "BIO110", "", "teacher"),
        ("course", "CHEM101", "", "teacher"),
    ]
    assert all(not d.problem for d in result.memberships)


def test_the_hash_ignores_order_and_changes_with_the_list():
    one = mapped({"courses": "A;B"})
    assert one.membership_hash == mapped({"courses": "B;A"}).membership_hash
    assert one.membership_hash != mapped({"courses": "A"}).membership_hash
    assert one.hash == mapped({"courses": "A"}).hash  # the user's own payload hash is apart


def test_dates_are_read_and_a_bad_one_is_a_problem_of_that_membership_only():
    good = mapped({"courses": "A", "from": "2026-09-01", "until": "1798761600"}).memberships[0]
    assert (good.timestart, good.timeend) == (1788220800, 1798761600)
    bad = mapped({"courses": "A;B", "from": "1st of May"})
    assert [d.problem for d in bad.memberships] == [
        'record E1 (line 2): course A: from "1st of May" is not a date (YYYY-MM-DD) or Unix seconds',
        'record E1 (line 2): course B: from "1st of May" is not a date (YYYY-MM-DD) or Unix seconds',
    ]
    backwards = mapped({"courses": "A", "from": "2026-09-01", "until": "2026-08-01"}).memberships[0]
    assert "until ends before from starts" in backwards.problem


def test_a_role_missing_from_the_sites_role_table_names_the_column():
    result = mapped({"courses": "A", "role": "tutor"})
    assert 'role "tutor" (from column role) is not in the site\'s role table' in result.memberships[0].problem


def test_a_person_the_source_calls_suspended_keeps_their_courses_suspended():
    rules = {"courses": [{"source": "courses", "separator": ";"}]}
    config = {**MAPPING, "fields": {**MAPPING["fields"], "suspended": "left"}, "memberships": rules}
    mapping = Mapping.from_config(config).for_site(["en"], ["student"])
    fields = {"login": "ana", "first": "Ana", "last": "Ruiz", "mail": "ana@example.edu", "lang": "en"}
    result = mapping.apply(SourceRecord("E1", {**fields, "courses": "A;B", "left": "1"}, "line 2"))
    assert [(d.key, d.state) for d in result.memberships] == [("A", "suspended"), ("B", "suspended")]


@pytest.mark.parametrize(
    ("memberships", "message"),
    [
        ([], "'memberships' must be an object"),
        ({"groups": []}, "unknown key 'memberships.groups'"),
        ({"courses": [{"separator": ";"}]}, "'memberships.courses[0].source' must name a source column"),
        (
            {"courses": [{"source": "c", "match": "fullname"}]},
            "'memberships.courses[0].match' must be one of",
        ),
        ({"courses": [{"source": "c", "role": "Student Role"}]}, "must be a role shortname"),
        ({"cohorts": [{"source": "d", "idnumber": "{dept}"}]}, "has {dept}; only {value} and {slug}"),
        ({"on_leave": "delete"}, "'memberships.on_leave' must be one of suspend, unenrol"),
        ({"cohort_category": "Faculty"}, "'memberships.cohort_category' must be a course category id"),
    ],
)
def test_a_bad_memberships_config_names_its_key(memberships, message):
    with pytest.raises(MappingConfigError, match=re.escape(message)):
        Mapping.from_config({**MAPPING, "memberships": memberships})


def test_slug_and_an_empty_list():
    assert slug("  Économie & Droit ") == "economie-droit"
    assert memberships_hash(()) == memberships_hash(())
    assert (
        Mapping.from_config(MAPPING)
        .apply(SourceRecord("E1", {"login": "a", "first": "A", "last": "B", "mail": "a@b.co"}, "l"))
        .membership_hash
        == ""
    )
