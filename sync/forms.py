from django import forms

from .models import MoodleSite


class SiteForm(forms.ModelForm):
    class Meta:
        model = MoodleSite
        fields = [
            "name", "slug", "base_url", "enabled", "time_zone", "max_concurrent_calls", "min_spacing_ms",
            "calls_per_minute", "batch_size", "max_input_vars", "run_time_budget",
        ]  # fmt: skip

    def clean_base_url(self) -> str:
        url = self.cleaned_data["base_url"].rstrip("/")
        if url.endswith("/webservice/rest/server.php"):
            url = url.removesuffix("/webservice/rest/server.php")
        return url
