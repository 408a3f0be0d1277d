from django.db.models.signals import post_save
from django.dispatch import receiver

from .models import MoodleSite
from .schedules import ensure_site_schedules


@receiver(post_save, sender=MoodleSite, dispatch_uid="sync.site_schedules")
def add_schedules_for_new_site(sender, instance: MoodleSite, created: bool, raw: bool = False, **kw) -> None:
    if created and not raw:
        ensure_site_schedules(instance)
