"""Totals of the call log per minute, 5 minutes, 15 minutes and 2 hours, for pages that look back days.

A busy site writes a call-log row per Moodle call; seven days of them are millions of rows, too many to
group on every page view. Each call also adds itself, in the same transaction as its row, to one rollup
row per span (site, function, outcome, errorcode and HTTP status): a count, the sum and largest of the
durations and a latency histogram. The spans are the bucket widths of the errors page's windows, so each
window reads about a hundred rows per key whatever the traffic. Percentiles from the histogram are
approximate (within the bucket the value falls in, ~±20 %), and pages that show them say so.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from datetime import UTC, datetime

from django.db import connection

# Upper bounds (ms) of the latency buckets; a last bucket holds everything slower.
BOUNDS_MS = (
    10, 20, 30, 50, 75, 100, 150, 200, 300, 400, 500, 750,
    1000, 1500, 2000, 3000, 4000, 5000, 7500, 10000, 20000, 30000, 60000,
)  # fmt: skip
SLOTS = len(BOUNDS_MS) + 1
MINUTE = 60
FIVE_MINUTES = 300
SPANS = (60, 300, 900, 7200)  # the chart buckets of the errors page's windows (metrics.WINDOWS)
_TABLE = "monitoring_callrollup"
_KEY = "site_id, span_s, bucket, function, outcome, errorcode, http_status"


def slot(duration_ms: float) -> int:
    """The histogram slot of a duration: PostgreSQL's width_bucket over BOUNDS_MS, 0-based."""
    return bisect_right(BOUNDS_MS, duration_ms)


def floor(at: datetime, span_s: int) -> datetime:
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % span_s, tz=UTC)


def add_call(
    *,
    site_id: int,
    function: str,
    outcome: str,
    errorcode: str,
    http_status: int | None,
    duration_ms: float,
    started_at: datetime,
) -> None:
    """Count one call in each span (upserts; run inside the transaction writing its row)."""
    histogram = [0] * SLOTS
    at = slot(duration_ms)
    histogram[at] = 1
    values = []
    params: list = []
    for span in SPANS:
        values.append("(%s, %s, %s, %s, %s, %s, %s, 1, %s, %s, %s, %s)")
        params += [
            site_id, span, floor(started_at, span), function, outcome, errorcode, http_status or 0,
            duration_ms, duration_ms, histogram, started_at,
        ]  # fmt: skip
    # Only constants of this module are formatted in; every value is a parameter.
    sql = f"""
        INSERT INTO {_TABLE} ({_KEY}, calls, duration_ms_sum, duration_ms_max, histogram, last_at)
        VALUES {", ".join(values)}
        ON CONFLICT ({_KEY}) DO UPDATE SET
            calls = {_TABLE}.calls + 1,
            duration_ms_sum = {_TABLE}.duration_ms_sum + EXCLUDED.duration_ms_sum,
            duration_ms_max = GREATEST({_TABLE}.duration_ms_max, EXCLUDED.duration_ms_max),
            histogram[{at + 1}] = {_TABLE}.histogram[{at + 1}] + 1,
            last_at = GREATEST({_TABLE}.last_at, EXCLUDED.last_at)
    """  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def rebuild(since: datetime | None = None) -> None:
    """Recount the rollups from the call log (from `since`, in whole spans, or all of it): for a database
    whose call log was written before rollups existed, or loaded in bulk."""
    slots = ", ".join(
        f"count(*) FILTER (WHERE width_bucket(duration_ms, %(bounds)s::float8[]) = {n})" for n in range(SLOTS)
    )
    start = floor(since, max(SPANS)) if since is not None else datetime(1970, 1, 1, tzinfo=UTC)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {_TABLE} WHERE bucket >= %s", [start])  # noqa: S608
        for span in SPANS:
            cursor.execute(
                f"""
                INSERT INTO {_TABLE} ({_KEY}, calls, duration_ms_sum, duration_ms_max, histogram, last_at)
                SELECT site_id, %(span)s,
                       to_timestamp(floor(extract(epoch FROM started_at) / %(span)s) * %(span)s),
                       function, outcome, errorcode, coalesce(http_status, 0),
                       count(*), sum(duration_ms), max(duration_ms), ARRAY[{slots}], max(started_at)
                FROM monitoring_calllog WHERE started_at >= %(start)s
                GROUP BY 1, 3, 4, 5, 6, 7
                """,  # noqa: S608
                {"span": span, "start": start, "bounds": list(BOUNDS_MS)},
            )


def percentile(histogram: Iterable[int], fraction: float, largest: float | None = None) -> float | None:
    """The duration below which `fraction` of the calls fell, interpolated within its bucket."""
    counts = list(histogram)
    total = sum(counts)
    if not total:
        return None
    wanted = fraction * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= wanted:
            low = BOUNDS_MS[index - 1] if index else 0.0
            high = BOUNDS_MS[index] if index < len(BOUNDS_MS) else (largest or low * 2)
            if largest is not None:
                high = min(high, largest)
            return low + (high - low) * (wanted - seen) / count
        seen += count
    return largest


def merged(histograms: Iterable[Iterable[int]]) -> list[int]:
    return [sum(counts) for counts in zip(*histograms, strict=True)] or [0] * SLOTS
