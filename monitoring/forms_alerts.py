"""Forms of the alerts pages: the alert filters, a mute, a new channel."""

from datetime import timedelta

from django import forms
from django.core.validators import validate_email
from django.db.models import QuerySet
from django.utils import timezone

from web.filters import FilterForm, site_field, with_any

from .kinds import AlertKind
from .models import Alert, AlertChannel

KIND_LABELS = dict(AlertKind.choices)


class AlertFilterForm(FilterForm):
    site = site_field()
    status = forms.ChoiceField(choices=with_any(Alert.Status.choices), required=False)
    kind = forms.ChoiceField(
        choices=with_any(sorted(KIND_LABELS.items(), key=lambda c: c[1])), required=False
    )

    def __init__(self, data=None, **kwargs) -> None:
        super().__init__(data, **kwargs)
        # Kinds raised elsewhere in the hub (the probes' missing functions) filter too.
        extra = set(Alert.objects.values_list("kind", flat=True).distinct()) - set(KIND_LABELS)
        if extra:
            self.fields["kind"].choices = [*self.fields["kind"].choices, *((k, k) for k in sorted(extra))]
            self.full_clean()

    def filter(self, alerts: QuerySet) -> QuerySet:
        if site := self.value("site"):
            alerts = alerts.filter(site=site)
        if status := self.value("status"):
            alerts = alerts.filter(status=status)
        if kind := self.value("kind"):
            alerts = alerts.filter(kind=kind)
        return alerts


MUTE_FOR = [("1h", "1 hour"), ("4h", "4 hours"), ("1d", "1 day"), ("3d", "3 days"), ("7d", "1 week")]
MUTE_DELTAS = {
    "1h": timedelta(hours=1),
    "4h": timedelta(hours=4),
    "1d": timedelta(days=1),
    "3d": timedelta(days=3),
    "7d": timedelta(days=7),
}


class MuteForm(forms.Form):
    key_prefix = forms.CharField(
        max_length=200,
        label="Alert keys starting with",
        help_text="e.g. auth:north for one site's token alerts, token_expiry: for every expiry warning.",
    )
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), help_text="Shown beside the mute.")
    duration = forms.ChoiceField(
        choices=MUTE_FOR, initial="4h", label="For", help_text="The mute ends by itself."
    )

    def until(self):
        return timezone.now() + MUTE_DELTAS[self.cleaned_data["duration"]]


class ChannelForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        label="HMAC secret",
        help_text="Webhooks only: the receiver checks the X-Hub-Signature-256 header with it. Entered once, "
        "stored encrypted, never shown again.",
    )

    class Meta:
        model = AlertChannel
        fields = ["name", "kind", "target", "min_severity"]
        widgets = {"target": forms.TextInput()}
        labels = {"min_severity": "Send alerts from"}
        help_texts = {
            "target": "Email addresses separated by commas, or the webhook's URL.",
            "min_severity": "Warning sends everything; Critical only the critical alerts.",
        }

    def clean(self) -> dict:
        data = super().clean()
        kind, target = data.get("kind"), (data.get("target") or "").strip()
        if kind == AlertChannel.Kind.WEBHOOK:
            if not target.startswith(("http://", "https://")):
                self.add_error("target", "Enter the webhook's http(s) URL.")
            if not data.get("secret"):
                self.add_error("secret", "A webhook needs a secret so the receiver can verify the notices.")
        elif kind == AlertChannel.Kind.EMAIL:
            addresses = [a.strip() for a in target.replace(";", ",").split(",") if a.strip()]
            if not addresses:
                self.add_error("target", "Enter at least one email address.")
            for address in addresses:
                try:
                    validate_email(address)
                except forms.ValidationError:
                    self.add_error("target", f"“{address}” is not an email address.")
            data["target"] = ", ".join(addresses)
        return data
