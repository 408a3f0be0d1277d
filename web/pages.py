"""Pieces every page uses: pagination that keeps the filter, a safe "next" address, and the list page
skeleton (filter, paginate, render) that every list of both apps is built on."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import urlencode

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.functional import cached_property
from django.utils.http import url_has_allowed_host_and_scheme

from .filters import FilterForm

PAGE_SIZE = 50
COUNT_CAP = 10_000


class CappedPaginator(Paginator):
    """Counts rows only up to COUNT_CAP. An exact count reads every matching row, which with a million
    records costs more than the page itself; nobody pages through 200 pages, they narrow the filter. Past
    the cap the page says "more than 10,000" and offers the first 200 pages."""

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if hasattr(rows, "order_by"):
            return rows.order_by()[: COUNT_CAP + 1].count()
        return len(rows)

    @property
    def capped(self) -> bool:
        return self.count > COUNT_CAP


def paginate(request: HttpRequest, queryset, per_page: int = PAGE_SIZE) -> tuple[Page, str]:
    """The requested page, and the querystring without `page` for the page links."""
    page = CappedPaginator(queryset, per_page).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return page, params.urlencode()


def safe_next(request: HttpRequest, default: str) -> str:
    """The `next` address a form carries, if it stays on this site; `default` otherwise."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def back(request: HttpRequest, default: str) -> HttpResponse:
    return redirect(safe_next(request, default))


def list_page(
    request: HttpRequest,
    template: str,
    filters: FilterForm,
    rows,
    *,
    per_page: int = PAGE_SIZE,
    expand: Callable[[QuerySet], Iterable] | None = None,
    **extra,
) -> HttpResponse:
    """A list: its filter form, the filtered rows paginated, and what the shared partials need.

    `expand` turns the page's rows into what the template shows, e.g. the same rows with counts aggregated
    from another table: the paginator then counts the plain rows, and the aggregate reads only this page's."""
    page, query = paginate(request, rows, per_page)
    if expand is not None:
        page.object_list = expand(page.object_list)
    context = {
        "filters": filters,
        "page": page,
        "query": query,
        "filter_query": urlencode(filters.active()),
        "filtered": bool(filters.active()),
        **extra,
    }
    return render(request, template, context)
