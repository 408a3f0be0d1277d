"""The Celery app: configuration comes from Django settings (CELERY_* names)."""

import os

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from monitoring.worker_liveness import on_worker_ready, on_worker_shutdown

from . import celery_redis_fix  # noqa: F401 - a worker must survive its Redis restarting (see the module)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integration_hub.settings")

app = Celery("integration_hub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Each worker keeps its Redis liveness key fresh while it runs (/healthz and the alert rules read it).
worker_ready.connect(on_worker_ready, weak=False)
worker_shutdown.connect(on_worker_shutdown, weak=False)
