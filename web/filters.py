"""List filters: every list keeps its filter in the querystring, so a filtered page can be shared. A
filter form never makes a whole page fail: a bad value is reported beside its field and the other
filters still apply."""

from __future__ import annotations

from datetime import timedelta

from django import forms

from sync.models import MoodleSite

SINCE_CHOICES = [("", "Any time"), ("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days")]
SINCE_DELTAS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
EMPTY = "-"  # a filter value meaning "blank" (a dead letter without errorcode or HTTP status)


def site_field() -> forms.ModelChoiceField:
    """The site filter every list has: by slug in the URL, "All sites" when empty."""
    return forms.ModelChoiceField(
        queryset=MoodleSite.objects.order_by("name"),
        to_field_name="slug",
        required=False,
        empty_label="All sites",
    )


def with_any(choices, label: str = "Any") -> list[tuple[str, str]]:
    return [("", label), *choices]


class FilterForm(forms.Form):
    """A GET form whose valid fields filter a queryset and can be described in words."""

    use_required_attribute = False

    def __init__(self, data=None, **kwargs) -> None:
        super().__init__(data if data is not None else {}, **kwargs)
        self.is_valid()  # fills cleaned_data with the valid fields; errors show beside the others

    def value(self, name: str):
        return self.cleaned_data.get(name) if hasattr(self, "cleaned_data") else None

    def active(self) -> dict:
        """The filters in use, for hidden inputs and links: {name: raw value}."""
        return {
            name: self.data[name]
            for name in self.fields
            if self.value(name) not in (None, "") and name in self.data
        }
