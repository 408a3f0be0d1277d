"""Records of the hub's own health."""

from django.db import models
from django.utils import timezone


class Heartbeat(models.Model):
    """When a piece of the hub last *finished* its periodic work (a dead-man switch).

    Written at the end of the work, never at the start: a process that starts and then hangs must look
    silent. The scheduler's row is written by a task that beat sends every minute and a worker runs, so
    a fresh row proves both beat and at least one worker are alive.
    """

    SCHEDULER = "scheduler"

    name = models.CharField(max_length=50, unique=True)
    last_finished_at = models.DateTimeField()
    detail = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.last_finished_at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def record(cls, name: str, detail: str = "") -> "Heartbeat":
        beat, _ = cls.objects.update_or_create(
            name=name, defaults={"last_finished_at": timezone.now(), "detail": detail[:200]}
        )
        return beat

    def age_seconds(self, now=None) -> float:
        return ((now or timezone.now()) - self.last_finished_at).total_seconds()
