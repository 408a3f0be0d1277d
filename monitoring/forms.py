"""Filters of the monitoring pages, kept in the querystring so a view can be shared."""

from django import forms
from django.db.models import QuerySet

from sync.models import MoodleSite
from web.filters import FilterForm

from .metrics import CATEGORIES, CATEGORY_LABELS, OK, WINDOWS

ERRORS = "errors"  # every error category
CATEGORY_CHOICES = [
    ("", "Any outcome"),
    (ERRORS, "Any error"),
    *((c, CATEGORY_LABELS[c]) for c in CATEGORIES),
    (OK, "OK"),
]
WINDOW_CHOICES = [("", "Any time"), *((w.name, w.label.capitalize()) for w in WINDOWS.values())]


class CallFilterForm(FilterForm):
    site = forms.ModelChoiceField(
        queryset=MoodleSite.objects.order_by("name"),
        to_field_name="slug",
        required=False,
        empty_label="All sites",
    )
    category = forms.ChoiceField(choices=CATEGORY_CHOICES, required=False, label="Outcome")
    errorcode = forms.CharField(required=False, max_length=200, label="Error code", help_text="Exact.")
    function = forms.CharField(required=False, max_length=100, label="Function", help_text="Exact name.")
    run = forms.IntegerField(required=False, min_value=1, label="Run #")
    window = forms.ChoiceField(choices=WINDOW_CHOICES, required=False, label="Time")

    def filter(self, calls: QuerySet) -> QuerySet:
        if site := self.value("site"):
            calls = calls.filter(site=site)
        category = self.value("category")
        if category == ERRORS:
            calls = calls.filter(outcome__in=CATEGORIES)  # an IN list uses the outcome index, "not ok" no
        elif category:
            calls = calls.filter(outcome=category)
        if errorcode := (self.value("errorcode") or "").strip():
            calls = calls.filter(errorcode=errorcode)
        if function := (self.value("function") or "").strip():
            calls = calls.filter(function=function)
        if run := self.value("run"):
            calls = calls.filter(run_id=run)
        if name := self.value("window"):
            calls = calls.filter(started_at__gte=WINDOWS[name].since())
        return calls

    def described(self) -> str:
        """The filter in words, for the page heading."""
        parts = []
        if site := self.value("site"):
            parts.append(f"on {site.name}")
        if category := self.value("category"):
            parts.append(
                "failed" if category == ERRORS else f"with outcome {CATEGORY_LABELS.get(category, category)}"
            )
        if errorcode := self.value("errorcode"):
            parts.append(f"with error code {errorcode}")
        if function := self.value("function"):
            parts.append(f"to {function}")
        if run := self.value("run"):
            parts.append(f"in run #{run}")
        if name := self.value("window"):
            parts.append(f"in the {WINDOWS[name].label}")
        return " ".join(parts)
