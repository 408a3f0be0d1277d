"""Values every page's frame needs: the scheduler's heartbeat and the workers' liveness, for the banners
when either goes silent, and the number of critical alerts nobody has acknowledged yet."""

from django.conf import settings

from .alerts import open_critical_count
from .health import check_worker
from .models import Heartbeat


def hub_status(request) -> dict:
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    beat = Heartbeat.objects.filter(name=Heartbeat.SCHEDULER).first()
    age = beat.age_seconds() if beat else None
    return {
        "scheduler_beat": beat,
        "scheduler_silent": age is None or age > settings.SCHEDULER_STALE_AFTER_S,
        "open_critical_alerts": open_critical_count(),
        "worker_check": check_worker(),
    }
