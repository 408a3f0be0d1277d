"""The "Your settings" page: the time zone this person reads every page in."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from .models import Preference, zone_names, zone_or_default


class PreferenceForm(forms.ModelForm):
    time_zone = forms.ChoiceField(
        required=False,
        label="Time zone",
        help_text="Every page and every time on it (lists, hovers, charts, alerts) is shown in this zone.",
    )

    class Meta:
        model = Preference
        fields = ["time_zone"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        default = f"The hub's default ({settings.TIME_ZONE})"
        self.fields["time_zone"].choices = [("", default), *((name, name) for name in zone_names())]


def user_settings(request: HttpRequest) -> HttpResponse:
    preference = Preference.objects.filter(user=request.user).first() or Preference(user=request.user)
    form = PreferenceForm(request.POST or None, instance=preference)
    if request.method == "POST" and form.is_valid():
        preference = form.save()
        zone = zone_or_default(preference.time_zone)
        messages.success(
            request,
            f"Times are now shown in {zone.key} ({timezone.localtime(timezone.now(), zone):%H:%M %Z} now).",
        )
        return redirect("web:settings")
    return render(request, "web/settings.html", {"form": form, "hub_zone": settings.TIME_ZONE})
