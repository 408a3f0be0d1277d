"""Pages of the sync domain. Thin: look up, call the domain, render."""

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.shortcuts import get_object_or_404, redirect, render

from .forms import SiteForm
from .models import MoodleSite


def site_list(request):
    sites = MoodleSite.objects.order_by("name")
    return render(request, "sync/site_list.html", {"sites": sites})


@permission_required("sync.add_moodlesite", raise_exception=True)
def site_add(request):
    form = SiteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        site = form.save()
        messages.success(request, f"Site {site.name} added. Next: give it a service token.")
        return redirect("site_detail", slug=site.slug)
    return render(request, "sync/site_form.html", {"form": form})


def site_detail(request, slug: str):
    site = get_object_or_404(MoodleSite, slug=slug)
    return render(
        request,
        "sync/site_detail.html",
        {"site": site, "tokens": site.tokens.all(), "runs": site.runs.all()[:20]},
    )
