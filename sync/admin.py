from django import forms
from django.contrib import admin

from .models import MoodleSite, ServiceToken, SyncRecord, SyncRun


@admin.register(MoodleSite)
class MoodleSiteAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "slug",
        "base_url",
        "enabled",
        "max_concurrent_calls",
        "calls_per_minute",
        "batch_size",
    ]
    list_filter = ["enabled"]
    search_fields = ["name", "slug", "base_url"]
    prepopulated_fields = {"slug": ["name"]}


class ServiceTokenForm(forms.ModelForm):
    """Takes the token once, write-only: the admin never shows a stored token, not even encrypted."""

    token = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        help_text="Entered once and stored encrypted. Leave empty to keep the stored token.",
    )

    class Meta:
        model = ServiceToken
        fields = ["site", "label", "token", "service_shortname", "valid_until", "ip_restriction", "status"]

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("token"):
            self.add_error("token", "A new token needs its value.")
        return cleaned

    def save(self, commit=True):
        if self.cleaned_data.get("token"):
            self.instance.set_token(self.cleaned_data["token"])
        return super().save(commit=commit)


@admin.register(ServiceToken)
class ServiceTokenAdmin(admin.ModelAdmin):
    form = ServiceTokenForm
    list_display = ["label", "site", "masked", "status", "valid_until", "last_used_at", "last_verified_at"]
    list_filter = ["status", "site"]
    readonly_fields = ["last4", "created_at", "created_by", "last_used_at", "last_verified_at"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(SyncRecord)
class SyncRecordAdmin(admin.ModelAdmin):
    list_display = [
        "external_id",
        "site",
        "moodle_id",
        "sync_status",
        "error_category",
        "synced_at",
        "attempts",
    ]
    list_filter = ["sync_status", "error_category", "site"]
    search_fields = ["external_id", "=moodle_id"]
    list_select_related = ["site"]


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = ["id", "site", "kind", "trigger", "status", "created_at", "finished_at", "seen", "errors"]
    list_filter = ["status", "kind", "trigger", "site"]
    list_select_related = ["site"]
    date_hierarchy = "created_at"
