"""The setup pages of a site, Admins only: its settings (add and edit), its source, its field mapping with
a live preview, and its reconciliation policy. The checks and the saving are in sync.source_setup, shared
with the addsite and addsource commands; every save is audited there."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from .. import source_setup
from ..forms import SiteForm
from ..forms_setup import MappingForm, PolicyForm, SourceForm
from ..mapping import TRANSFORMS
from ..models import MoodleSite, SyncSource

CHANGE_SITE = "sync.change_moodlesite"
CHANGE_SOURCE = "sync.change_syncsource"
ADD_SOURCE = "sync.add_syncsource"


def site_form_page(request: HttpRequest, site: MoodleSite | None) -> HttpResponse:
    """Add (site None) or edit a site. The form checks every field; the URL is probed after the save and
    a site that does not answer as Moodle is saved with a warning, since it may be set up before the hub
    can reach it."""
    before = source_setup.snapshot(site) if site is not None else None
    old_url = site.base_url if site is not None else None
    form = SiteForm(request.POST or None, instance=site)
    if site is not None:
        # Schedules and URLs carry the slug: renaming would orphan them.
        form.fields["slug"].disabled = True
        form.fields["slug"].help_text = "Fixed once the site exists: its schedules and links carry it."
    if request.method == "POST" and form.is_valid():
        try:
            saved = source_setup.save_site(form.save(commit=False), request.user, before)
        except source_setup.SetupError as exc:
            form.add_error("time_zone", str(exc))
        else:
            if site is None:
                messages.success(
                    request, f"Site {saved.name} added. Next: give it a service token and a source."
                )
            else:
                messages.success(request, f"Site {saved.name} saved.")
            if old_url != saved.base_url and (warning := source_setup.probe_moodle(saved.base_url)):
                messages.warning(request, f"Saved, but {warning}. Runs on this site fail until it answers.")
            return redirect("sync:site_detail", slug=saved.slug)
    return render(request, "sync/site_form.html", {"form": form, "site": site})


@permission_required(CHANGE_SITE, raise_exception=True)
def site_edit(request: HttpRequest, slug: str) -> HttpResponse:
    return site_form_page(request, get_object_or_404(MoodleSite, slug=slug))


def _check_source_perms(user) -> None:
    if not (user.has_perm(ADD_SOURCE) and user.has_perm(CHANGE_SOURCE)):
        raise PermissionDenied("only Admins set up sources")


def source_edit(request: HttpRequest, slug: str) -> HttpResponse:
    """Create or change the site's source; a new source goes on to its mapping."""
    _check_source_perms(request.user)
    site = get_object_or_404(MoodleSite, slug=slug)
    source = SyncSource.objects.filter(site=site).select_related("site").first()
    form = SourceForm(request.POST or None, request.FILES or None, site=site, source=source)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        upload = data.get("upload") if data.get("csv_origin") == "upload" else None
        saved = source_setup.save_source(
            site,
            data["kind"],
            form.config,
            request.user,
            removed_policy=data["removed_policy"],
            upload=upload,
        )
        first = form.first_records[0] if form.first_records else None
        read = (
            f"its first record ({first.origin}) is {first.external_id}" if first else "it is empty right now"
        )
        messages.success(request, f"Source saved: {saved.get_kind_display()}; {read}.")
        if source is None or not saved.mapping:
            messages.info(request, "Next: map its columns to Moodle's fields.")
            return redirect("sync:mapping_edit", slug=site.slug)
        return redirect("sync:site_detail", slug=site.slug)
    return render(
        request,
        "sync/source_form.html",
        {
            "site": site,
            "source": source,
            "form": form,
            "kept_keys": form.kept_keys(),
            "secrets": _secret_states(source),
        },
    )


def mapping_edit(request: HttpRequest, slug: str) -> HttpResponse:
    """The mapping form and its preview. POST "save" stores a valid mapping; POST "preview" (the button, or
    htmx as fields change, which swaps in only #preview) maps the source's first records with what is typed,
    storing nothing."""
    _check_source_perms(request.user)
    site = get_object_or_404(MoodleSite.objects.select_related("source"), slug=slug)
    if not SyncSource.objects.filter(site=site).exists():
        messages.info(request, "Set up the source first: the mapping picks from its columns.")
        return redirect("sync:source_edit", slug=site.slug)
    try:
        records = source_setup.read_first(site.source.kind, site.source.config, source_setup.PREVIEW_RECORDS)
        source_error = ""
    except source_setup.SetupError as exc:
        records, source_error = [], str(exc)
    columns = source_setup.columns_of(records)
    form = MappingForm(request.POST or None, site=site, columns=columns)
    preview = None
    wants_preview = request.method == "POST" and (
        "preview" in request.POST or request.headers.get("HX-Request") == "true"
    )
    if request.method == "POST":
        valid = form.is_valid()
        if valid and not wants_preview:
            source_setup.save_mapping(site, form.config, request.user)
            messages.success(
                request, f"Mapping of {site.name} saved. Next: a dry run shows what a run would do."
            )
            return redirect("sync:site_detail", slug=site.slug)
        preview = source_setup.preview(site, form.config, records, source_error)
    elif site.source.mapping:
        preview = source_setup.preview(site, site.source.mapping, records, source_error)
    return render(
        request,
        "sync/mapping_form.html",
        {
            "site": site,
            "form": form,
            "rows": form.rows(),
            "columns": columns,
            "source_error": source_error,
            "preview": preview,
            "transforms": list(TRANSFORMS),
            "customfields": site.source.mapping.get("customfields") if site.source.mapping else None,
        },
    )


@permission_required(CHANGE_SITE, raise_exception=True)
def policy_edit(request: HttpRequest, slug: str) -> HttpResponse:
    site = get_object_or_404(MoodleSite, slug=slug)
    before = source_setup.snapshot(site, source_setup.POLICY_FIELDS)
    form = PolicyForm(request.POST or None, instance=site)
    if request.method == "POST" and form.is_valid():
        source_setup.save_policy(form.save(commit=False), request.user, before)
        messages.success(request, f"Reconciliation policy of {site.name} saved.")
        return redirect("sync:site_detail", slug=site.slug)
    return render(request, "sync/policy_form.html", {"site": site, "form": form})


def _secret_states(source: SyncSource | None) -> list[tuple[str, bool]]:
    """The secrets the stored source names, and whether this process's environment has them."""
    if source is None:
        return []
    names = [source.config.get(key) for key in ("auth_secret", "dsn_secret")]
    return [(name, source_setup.secret_is_set(name)) for name in names if isinstance(name, str) and name]
