from django.contrib import admin

from .models import Heartbeat


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ["name", "last_finished_at", "detail"]
    readonly_fields = ["name", "last_finished_at", "detail"]
