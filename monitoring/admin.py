from django.contrib import admin

from .models import Alert, AlertChannel, AlertMute, AuditEntry, Delivery, Heartbeat, SchedulePing


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ["name", "last_finished_at", "detail"]
    readonly_fields = ["name", "last_finished_at", "detail"]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["title", "key", "kind", "severity", "status", "count", "last_seen_at"]
    list_filter = ["status", "severity", "kind"]
    search_fields = ["key", "title"]
    readonly_fields = [
        "key", "kind", "site", "run", "count", "first_seen_at", "last_seen_at", "acknowledged_at",
        "acknowledged_by", "resolved_at", "last_notified_at", "notifications", "recovery_notified_at",
    ]  # fmt: skip


@admin.register(AlertChannel)
class AlertChannelAdmin(admin.ModelAdmin):
    """The HMAC secret is not a form field here (it is set once on the channels page, encrypted)."""

    list_display = ["name", "kind", "min_severity", "enabled", "disabled_reason"]
    fields = ["name", "kind", "target", "min_severity", "enabled", "disabled_reason", "disabled_at"]
    readonly_fields = ["disabled_at"]


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["at", "alert", "channel", "event", "attempt", "ok", "permanent", "duration_ms"]
    list_filter = ["ok", "event", "channel"]


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor", "action", "target"]
    list_filter = ["action"]
    search_fields = ["target", "detail"]
    list_select_related = ["actor"]  # one join, not a user query per row


@admin.register(AlertMute)
class AlertMuteAdmin(admin.ModelAdmin):
    list_display = ["key_prefix", "reason", "created_by", "expires_at"]


@admin.register(SchedulePing)
class SchedulePingAdmin(admin.ModelAdmin):
    list_display = ["task_name", "success_url", "failure_url"]
