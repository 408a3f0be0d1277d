"""Values every page's frame needs: the scheduler's heartbeat, for the banner when it goes silent."""

from django.conf import settings

from .models import Heartbeat


def hub_status(request) -> dict:
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    beat = Heartbeat.objects.filter(name=Heartbeat.SCHEDULER).first()
    age = beat.age_seconds() if beat else None
    return {
        "scheduler_beat": beat,
        "scheduler_silent": age is None or age > settings.SCHEDULER_STALE_AFTER_S,
    }
