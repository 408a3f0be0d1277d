"""HTTP JSON source against a fake API (httpx.MockTransport and a small WSGI app): paging, auth from
a named secret, retries with backoff, refusals and bad pages."""

import json
from urllib.parse import parse_qs

import httpx
import pytest

from sync.sources import HttpJsonSource, SourceConfigError, SourceError, open_source

TOKEN = "s3cret-token-value"
PEOPLE = [
    {
        "id": 1,
        "name": "Begoña Núñez",
        "active": True,
        "manager": None,
        "address": {"city": "Málaga", "zip": "29001"},
    },
    {"id": 2, "name": "Nguyễn Thị Minh Khai", "active": False, "score": 9.5, "tags": ["a", "b"]},
    {"id": 3, "name": "Łukasz Żółć", "active": True, "address": {"city": "Łódź", "geo": {"lat": 51.7}}},
    {"id": 4, "name": "Jürgen Müller"},
    {"id": 5, "name": "Ayşe Kaya"},
]


def secrets(name: str) -> str:
    return {"HR_API_TOKEN": TOKEN}[name]


def source(config: dict, handler, sleeps: list | None = None) -> HttpJsonSource:
    full = {
        "kind": "http",
        "url": "https://hr.example.org/api/people",
        "auth_secret": "HR_API_TOKEN",
        **config,
    }
    sleeps = [] if sleeps is None else sleeps
    return open_source(full, secrets=secrets, transport=httpx.MockTransport(handler), sleep=sleeps.append)


def next_link_api(request: httpx.Request) -> httpx.Response:
    assert request.headers["Authorization"] == TOKEN
    page = int(request.url.params.get("cursor", "0"))
    body = {"data": PEOPLE[page * 2 : page * 2 + 2], "links": {"next": None}}
    if page * 2 + 2 < len(PEOPLE):
        body["links"]["next"] = f"/api/people?cursor={page + 1}"
    return httpx.Response(200, json=body)


def test_next_link_paging_flattens_and_stringifies():
    src = source({"paging": {"type": "next_link", "next_path": "links.next"}}, next_link_api)
    records = list(src.records())
    assert [r.external_id for r in records] == ["1", "2", "3", "4", "5"]
    assert [r.origin for r in records] == [
        "page 1 item 1",
        "page 1 item 2",
        "page 2 item 1",
        "page 2 item 2",
        "page 3 item 1",
    ]
    assert records[0].fields == {
        "id": "1",
        "name": "Begoña Núñez",
        "active": "1",
        "manager": "",
        "address.city": "Málaga",
        "address.zip": "29001",
    }
    assert records[1].fields["active"] == "0"
    assert records[1].fields["score"] == "9.5"
    assert records[1].fields["tags.0"] == "a"
    assert records[2].fields["address.geo.lat"] == "51.7"
    assert all(r.error is None for r in records)


def test_page_paging_stops_at_a_short_page():
    seen = []

    def api(request):
        params = request.url.params
        seen.append((params["page"], params["limit"]))
        start = (int(params["page"]) - 1) * 2
        return httpx.Response(200, json={"result": {"items": PEOPLE[start : start + 2]}})

    src = source({"records_path": "result.items", "paging": {"type": "page", "limit": 2}}, api)
    assert [r.external_id for r in src.records()] == ["1", "2", "3", "4", "5"]
    assert seen == [("1", "2"), ("2", "2"), ("3", "2")]


def test_page_paging_stops_at_an_empty_page_and_honours_names_and_start():
    seen = []

    def api(request):
        params = request.url.params
        seen.append(dict(params))
        offset = int(params["p"]) * 2
        return httpx.Response(200, json=PEOPLE[offset : offset + 2] if offset < 4 else [])

    config = {"records_path": "", "params": {"active": "1"}, "paging": {"type": "page", "page_param": "p",
              "limit_param": "size", "limit": 2, "start": 0}}  # fmt: skip
    assert [r.external_id for r in source(config, api).records()] == ["1", "2", "3", "4"]
    assert seen[-1] == {"active": "1", "p": "2", "size": "2"}


def test_link_header_paging():
    def api(request):
        page = int(request.url.params.get("page", "1"))
        headers = (
            {"Link": f'<https://hr.example.org/api/people?page={page + 1}>; rel="next"'} if page < 3 else {}
        )
        return httpx.Response(200, json={"data": [PEOPLE[page - 1]]}, headers=headers)

    assert [r.external_id for r in source({"paging": {"type": "link_header"}}, api).records()] == [
        "1",
        "2",
        "3",
    ]


def test_a_link_back_to_a_page_already_read_stops_the_source():
    def api(request):
        return httpx.Response(200, json={"data": [PEOPLE[0]], "next": "/api/people?again=1"})

    with pytest.raises(SourceError, match="already read"):
        list(source({"paging": {"type": "next_link", "next_path": "next"}}, api).records())


def test_auth_prefix_and_static_headers():
    def api(request):
        assert request.headers["X-Api-Key"] == "Token " + TOKEN
        assert request.headers["Accept"] == "application/json"
        return httpx.Response(200, json={"data": [PEOPLE[0]]})

    config = {"auth_header": "X-Api-Key", "auth_prefix": "Token ", "headers": {"Accept": "application/json"}}
    assert len(list(source(config, api).records())) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refusal_stops_at_once_without_leaking_the_token(status):
    calls = []

    def api(request):
        calls.append(request)
        return httpx.Response(status, json={"error": "nope"})

    with pytest.raises(
        SourceError, match=rf"authentication refused by hr.example.org \(HTTP {status}\)"
    ) as info:
        list(source({}, api).records())
    assert len(calls) == 1
    assert TOKEN not in str(info.value)


def test_transient_failures_are_retried_with_backoff():
    answers = iter([
        httpx.ConnectError("refused"),
        httpx.Response(503),
        httpx.Response(429, headers={"Retry-After": "7"}),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, json={"data": [PEOPLE[0]]}),
    ])  # fmt: skip

    def api(request):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    sleeps: list[float] = []
    records = list(source({"retries": 4}, api, sleeps).records())
    assert [r.external_id for r in records] == ["1"]
    assert len(sleeps) == 4
    assert sleeps[2] == 7.0  # Retry-After is honoured
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0 and 2.0 <= sleeps[3] <= 4.0


def test_retries_exhausted_fail_the_source_naming_the_page():
    sleeps: list[float] = []
    with pytest.raises(
        SourceError, match=r"page 1 \(https://hr.example.org/api/people\): HTTP 502 after 3 attempts"
    ):
        list(source({"retries": 2}, lambda request: httpx.Response(502), sleeps).records())
    assert len(sleeps) == 2


def test_a_page_that_is_not_json_fails_naming_the_page():
    def api(request):
        if request.url.params.get("cursor") == "1":
            return httpx.Response(200, text="<html>maintenance</html>", headers={"Content-Type": "text/html"})
        return next_link_api(request)

    records = source({"paging": {"type": "next_link", "next_path": "links.next"}}, api).records()
    assert next(records).external_id == "1"
    assert next(records).external_id == "2"
    with pytest.raises(SourceError, match=r"page 2 .*cursor=1.*not JSON \(text/html\)"):
        next(records)


def test_records_path_missing_fails_the_source():
    with pytest.raises(SourceError, match="expected a list of records at 'data', found NoneType"):
        list(source({}, lambda request: httpx.Response(200, json={"items": []})).records())


def test_other_client_errors_and_redirects_fail_the_source():
    with pytest.raises(SourceError, match="HTTP 404"):
        list(source({}, lambda request: httpx.Response(404)).records())
    redirect = httpx.Response(302, headers={"Location": "https://elsewhere.example.org/people"})
    with pytest.raises(SourceError, match=r"redirected .* to https://elsewhere\.example\.org/people"):
        list(source({}, lambda request: redirect).records())


def test_bad_items_are_row_errors_and_the_rest_goes_on():
    items = [{"id": 1}, "oops", {"name": "no id"}, {"id": ""}, {"id": 5}]
    records = list(source({}, lambda request: httpx.Response(200, json={"data": items})).records())
    assert [r.error for r in records] == [
        None,
        "page 1 item 2: not a JSON object",
        "page 1 item 3: id is missing or empty",
        "page 1 item 4: id is missing or empty",
        None,
    ]


def test_works_through_a_wsgi_app():
    def app(environ, start_response):
        query = parse_qs(environ.get("QUERY_STRING", ""))
        page = int(query.get("page", ["1"])[0])
        body = json.dumps({"people": PEOPLE[(page - 1) * 3 : page * 3]}, ensure_ascii=False).encode()
        start_response("200 OK", [("Content-Type", "application/json; charset=utf-8")])
        return [body]

    config = {"kind": "http", "url": "http://hr.local/people", "records_path": "people", "id_field": "id",
              "paging": {"type": "page", "limit": 3}}  # fmt: skip
    src = open_source(config, transport=httpx.WSGITransport(app=app))
    assert [r.fields["name"] for r in src.records()] == [p["name"] for p in PEOPLE]


def test_describe_hides_credentials_in_the_url():
    src = open_source({"kind": "http", "url": "https://user:pw@hr.example.org/api"})
    assert "pw" not in src.describe()
    assert "hr.example.org/api" in src.describe()


def test_missing_secret_names_the_variable(monkeypatch):
    monkeypatch.delenv("HR_API_TOKEN_FOR_TEST", raising=False)
    config = {"kind": "http", "url": "https://hr.example.org/api", "auth_secret": "HR_API_TOKEN_FOR_TEST"}
    with pytest.raises(SourceConfigError, match="HR_API_TOKEN_FOR_TEST"):
        open_source(config)
    monkeypatch.setenv("HR_API_TOKEN_FOR_TEST", "abc")
    assert isinstance(open_source(config), HttpJsonSource)


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({}, "url"),
        ({"url": "hr.example.org/api"}, "url"),
        ({"url": "https://h/a", "paging": {"type": "cursor"}}, "paging.type"),
        ({"url": "https://h/a", "paging": {"type": "page", "limit": 0}}, "paging.limit"),
        ({"url": "https://h/a", "paging": {"type": "page", "size": 10}}, "paging.size"),
        ({"url": "https://h/a", "timeout_s": "30"}, "timeout_s"),
        ({"url": "https://h/a", "retries": -1}, "retries"),
        ({"url": "https://h/a", "auth_header": "X-Key"}, "auth_header"),
        ({"url": "https://h/a", "token": "abc"}, "token"),
    ],
)
def test_invalid_config_names_the_key(config, named):
    with pytest.raises(SourceConfigError, match=named):
        open_source({"kind": "http", **config}, secrets=secrets)
