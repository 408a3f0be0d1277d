"""Every request reads times in the viewer's zone (their Preference, else TIME_ZONE)."""

from __future__ import annotations

from django.utils import timezone

from .models import Preference


class ViewerTimeZoneMiddleware:
    """Activates the signed-in person's time zone for the request, so templates, `{% reltime %}`, the
    `when` filter and the charts all use it without a view passing a zone. Must come after
    AuthenticationMiddleware. One small query per request, constant whatever the page shows."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            timezone.activate(Preference.zone_for(user))
        else:
            timezone.deactivate()
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
