"""People from a paged JSON API (an HR or CRM system).

Pages are fetched one at a time and their items yielded before the next request, so memory holds
one page. Transient failures (connection errors, timeouts, 429, 5xx) are retried with exponential
backoff; an authentication refusal stops at once, since retrying a bad token only fills the far
side's logs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from .base import ConfigReader, SourceConfigError, SourceError, SourceRecord, scalar_to_str

_PAGING_TYPES = ("next_link", "link_header", "page", "none")
_BACKOFF_BASE_S = 0.5
_BACKOFF_MAX_S = 30.0


class HttpJsonSource:
    """A JSON API whose pages hold a list of person objects at `records_path`."""

    def __init__(
        self,
        *,
        url: str,
        id_field: str,
        records_path: str = "data",
        paging: dict | None = None,
        auth_header: str | None = None,
        auth_value: str | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.id_field = id_field
        self.records_path = records_path
        self.paging = paging or {"type": "none"}
        self.headers = dict(headers or {})
        if auth_header and auth_value is not None:
            self.headers[auth_header] = auth_value
        self.params = dict(params or {})
        self.timeout_s = timeout_s
        self.retries = retries
        self.transport = transport
        self.sleep = sleep

    @classmethod
    def from_config(
        cls,
        config: dict,
        *,
        secrets: Callable[[str], str],
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> HttpJsonSource:
        known = {"url", "records_path", "id_field", "paging", "auth_header", "auth_secret", "auth_prefix"}
        known |= {"headers", "params", "timeout_s", "retries"}
        reader = ConfigReader(config, "http", known)
        url = reader.text("url")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise SourceConfigError("http source config: 'url' must be an absolute http(s) URL")
        auth_secret = reader.text("auth_secret", None)
        auth_header = reader.text("auth_header", "Authorization" if auth_secret else None)
        auth_value = None
        if auth_secret:
            auth_value = reader.text("auth_prefix", "", allow_empty=True) + secrets(auth_secret)
        elif "auth_header" in config:
            raise SourceConfigError("http source config: 'auth_header' needs 'auth_secret'")
        return cls(
            url=url,
            id_field=reader.text("id_field", "id"),
            records_path=reader.text("records_path", "data", allow_empty=True),
            paging=_check_paging(config.get("paging", {"type": "none"})),
            auth_header=auth_header,
            auth_value=auth_value,
            headers=reader.text_dict("headers"),
            params=reader.text_dict("params"),
            timeout_s=reader.number("timeout_s", 30.0),
            retries=reader.integer("retries", 3),
            transport=transport,
            sleep=sleep or time.sleep,
        )

    def describe(self) -> str:
        return f"HTTP JSON {_redact(self.url)} (paging {self.paging['type']}, id field {self.id_field})"

    def records(self) -> Iterator[SourceRecord]:
        with httpx.Client(
            transport=self.transport,
            timeout=httpx.Timeout(self.timeout_s),
            headers=self.headers,
            follow_redirects=False,
        ) as client:
            for number, items in enumerate(self._pages(client), start=1):
                for position, item in enumerate(items, start=1):
                    yield self._record(item, f"page {number} item {position}")

    def _pages(self, client: httpx.Client) -> Iterator[list]:
        kind = self.paging["type"]
        if kind == "page":
            yield from self._numbered_pages(client)
            return
        url: str | None = self.url
        params: dict[str, str] | None = self.params
        seen = {str(httpx.URL(self.url, params=self.params))}
        number = 0
        while url:
            number += 1
            response = self._get(client, url, params, number)
            page = _json(response, number, url)
            yield _records_at(page, self.records_path, number)
            if kind == "next_link":
                link = _at_path(page, self.paging.get("next_path", "links.next"))
                url = urljoin(url, link) if isinstance(link, str) and link else None
            elif kind == "link_header":
                link = response.links.get("next", {}).get("url")
                url = urljoin(url, link) if link else None
            else:
                url = None
            # The next link already carries the query; repeating the static params would duplicate them.
            params = None
            if url is not None:
                if url in seen:
                    raise SourceError(f"page {number + 1}: the API links back to a page already read ({url})")
                seen.add(url)

    def _numbered_pages(self, client: httpx.Client) -> Iterator[list]:
        page_param = self.paging.get("page_param", "page")
        limit_param = self.paging.get("limit_param", "limit")
        limit = self.paging.get("limit", 500)
        start = self.paging.get("start", 1)
        number = 0
        while True:
            params = dict(self.params)
            params[page_param] = str(start + number)
            if limit_param:
                params[limit_param] = str(limit)
            number += 1
            response = self._get(client, self.url, params, number)
            items = _records_at(_json(response, number, self.url), self.records_path, number)
            if not items:
                return
            yield items
            if limit_param and len(items) < limit:
                return

    def _get(self, client: httpx.Client, url: str, params: dict | None, number: int) -> httpx.Response:
        where = f"page {number} ({_redact(url)})"
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            retry_after = None
            try:
                response = client.get(url, params=params)
            except httpx.TimeoutException:
                problem = "no answer in time (a timeout)"
            except httpx.TransportError:
                problem = "the connection failed (refused, reset or no route)"
            else:
                status = response.status_code
                if status in (401, 403):
                    raise SourceError(
                        f"authentication refused by {urlsplit(url).netloc} (HTTP {status}) for {where}; "
                        "check the token named by auth_secret"
                    )
                if status == 429 or status >= 500:
                    problem = f"HTTP {status}"
                    retry_after = _retry_after(response)
                elif 300 <= status < 400:
                    location = response.headers.get("location", "?")
                    raise SourceError(f"{where}: redirected (HTTP {status}) to {_redact(location)}")
                elif status >= 400:
                    raise SourceError(f"{where}: HTTP {status} {response.reason_phrase}")
                else:
                    return response
            if attempt == attempts:
                break
            delay = min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2 ** (attempt - 1))
            delay = retry_after if retry_after is not None else delay * (0.5 + random.random() / 2)  # noqa: S311
            self.sleep(min(delay, _BACKOFF_MAX_S * 4))
        raise SourceError(f"{where}: {problem} after {attempts} attempts")

    def _record(self, item: Any, origin: str) -> SourceRecord:
        if not isinstance(item, dict):
            return SourceRecord("", {}, origin, f"{origin}: not a JSON object")
        fields = flatten(item)
        external_id = fields.get(self.id_field, "").strip()
        error = None if external_id else f"{origin}: {self.id_field} is missing or empty"
        return SourceRecord(external_id, fields, origin, error)


def flatten(item: dict, prefix: str = "") -> dict[str, str]:
    """Nested objects and lists become dotted keys ("address.city", "phones.0") of strings, so a
    mapping can name any value with one column-like key."""
    flat: dict[str, str] = {}
    for key, value in item.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat.update(flatten({str(i): v for i, v in enumerate(value)}, f"{name}."))
        else:
            flat[name] = scalar_to_str(value)
    return flat


def _check_paging(paging: object) -> dict:
    if not isinstance(paging, dict) or paging.get("type") not in _PAGING_TYPES:
        choices = ", ".join(_PAGING_TYPES)
        raise SourceConfigError(f"http source config: 'paging.type' must be one of {choices}")
    known = {
        "next_link": {"type", "next_path"},
        "link_header": {"type"},
        "page": {"type", "page_param", "limit_param", "limit", "start"},
        "none": {"type"},
    }[paging["type"]]
    unknown = sorted(set(paging) - known)
    if unknown:
        raise SourceConfigError(f"http source config: unknown key 'paging.{unknown[0]}'")
    for key in ("next_path", "page_param"):
        if key in paging and (not isinstance(paging[key], str) or not paging[key]):
            raise SourceConfigError(f"http source config: 'paging.{key}' must be a non-empty string")
    limit_param = paging.get("limit_param")
    if limit_param is not None and not isinstance(limit_param, str):
        raise SourceConfigError("http source config: 'paging.limit_param' must be a string or null")
    for key, minimum in (("limit", 1), ("start", 0)):
        value = paging.get(key, minimum)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SourceConfigError(f"http source config: 'paging.{key}' must be an integer >= {minimum}")
    return dict(paging)


def _json(response: httpx.Response, number: int, url: str) -> Any:
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        raise SourceError(f"page {number} ({_redact(url)}): the response is not JSON ({kind})") from None


def _at_path(document: Any, path: str) -> Any:
    value = document
    for part in path.split(".") if path else ():
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _records_at(page: Any, path: str, number: int) -> list:
    items = _at_path(page, path)
    if not isinstance(items, list):
        where = f"at {path!r}" if path else "as the page itself"
        raise SourceError(f"page {number}: expected a list of records {where}, found {type(items).__name__}")
    return items


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


def _redact(url: str) -> str:
    """The URL without user:password, for messages and summaries."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))
