"""What one person chose for how the pages look to them."""

from __future__ import annotations

import zoneinfo
from functools import lru_cache

from django.conf import settings
from django.db import models


@lru_cache(maxsize=1)
def zone_names() -> tuple[str, ...]:
    """The IANA zones a person may choose from (read once: the list is a directory walk)."""
    return tuple(sorted(zoneinfo.available_timezones()))


def zone_or_default(name: str | None) -> zoneinfo.ZoneInfo:
    """The zone called `name`, or the hub's TIME_ZONE when the name is empty or unknown (a zone can leave
    the system's tz database after an upgrade; a page must not fail for it)."""
    for candidate in (name, settings.TIME_ZONE, "UTC"):
        if candidate:
            try:
                return zoneinfo.ZoneInfo(candidate)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                continue
    return zoneinfo.ZoneInfo("UTC")


class Preference(models.Model):
    """One person's display choices. Times are stored in UTC and every page shows them in the viewer's
    zone: the one chosen here, else the hub's TIME_ZONE. One rule for every page, so the same run reads
    the same on the Overview, its run page and its alert (sites keep their own zone for schedules)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference")
    time_zone = models.CharField(
        max_length=64,
        blank=True,
        help_text="IANA name, e.g. America/Los_Angeles; blank means the hub's TIME_ZONE.",
    )

    def __str__(self) -> str:
        return f"{self.user} ({self.time_zone or 'hub default'})"

    @classmethod
    def zone_for(cls, user) -> zoneinfo.ZoneInfo:
        """The zone `user` reads times in: their choice, else TIME_ZONE."""
        if user is None or not user.is_authenticated:
            return zone_or_default(None)
        name = cls.objects.filter(user=user).values_list("time_zone", flat=True).first()
        return zone_or_default(name)
