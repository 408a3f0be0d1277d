from django.urls import path, register_converter

from .views import (
    conflicts,
    deadletters,
    discrepancies,
    events,
    hook_secrets,
    hooks,
    locks,
    memberships,
    records,
    resolutions,
    runs,
    setup,
    sites,
    tokens,
)

app_name = "sync"


class TargetKindConverter:
    """A URL says "courses" or "cohorts"; its view gets "course" or "cohort" (a MembershipKind)."""

    regex = "courses|cohorts"

    def to_python(self, value: str) -> str:
        return value.removesuffix("s")

    def to_url(self, value: str) -> str:
        return f"{value}s"


register_converter(TargetKindConverter, "targets")

urlpatterns = [
    path("hooks/source/<slug:slug>/", hooks.source_hook, name="source_hook"),
    path("hooks/moodle/<slug:slug>/", hooks.moodle_hook, name="moodle_hook"),
    path("sites/", sites.site_list, name="site_list"),
    path("sites/add/", sites.site_add, name="site_add"),
    path("sites/<slug:slug>/", sites.site_detail, name="site_detail"),
    path("sites/<slug:slug>/edit/", setup.site_edit, name="site_edit"),
    path("sites/<slug:slug>/source/", setup.source_edit, name="source_edit"),
    path("sites/<slug:slug>/mapping/", setup.mapping_edit, name="mapping_edit"),
    path("sites/<slug:slug>/policy/", setup.policy_edit, name="policy_edit"),
    path("sites/<slug:slug>/run/", sites.run_start, name="run_start"),
    path("sites/<slug:slug>/reconcile/", sites.site_reconcile, name="site_reconcile"),
    path("sites/<slug:slug>/<targets:kind>/", memberships.target_list, name="target_list"),
    path("sites/<slug:slug>/<targets:kind>/<int:pk>/", memberships.target_detail, name="target_detail"),
    path("sites/<slug:slug>/memberships/", memberships.site_memberships, name="site_memberships"),
    path("sites/<slug:slug>/events/", events.site_events, name="site_events"),
    path("sites/<slug:slug>/hook-secrets/", hook_secrets.site_hook_secrets, name="site_hook_secrets"),
    path("sites/<slug:slug>/hook-secrets/make/", hook_secrets.hook_secret_make, name="hook_secret_make"),
    path(
        "sites/<slug:slug>/hook-secrets/<int:pk>/revoke/",
        hook_secrets.hook_secret_revoke,
        name="hook_secret_revoke",
    ),
    path("sites/<slug:slug>/completions/", events.site_completions, name="site_completions"),
    path("sites/<slug:slug>/completions.csv", events.completion_export, name="completion_export"),
    path("sites/<slug:slug>/tokens/", tokens.site_tokens, name="site_tokens"),
    path("sites/<slug:slug>/tokens/<int:pk>/verify/", tokens.token_verify, name="token_verify"),
    path("sites/<slug:slug>/tokens/<int:pk>/promote/", tokens.token_promote, name="token_promote"),
    path("sites/<slug:slug>/tokens/<int:pk>/revoked/", tokens.token_revoked, name="token_revoked"),
    path("tokens/", tokens.token_timeline, name="token_timeline"),
    path("locks/", locks.lock_list, name="locks"),
    path("locks/<slug:slug>/<int:run_id>/break/", locks.lock_break, name="lock_break"),
    path("runs/", runs.run_list, name="run_list"),
    path("runs/<int:pk>/", runs.run_detail, name="run_detail"),
    path("runs/<int:pk>/progress/", runs.run_progress, name="run_progress"),
    path("runs/<int:pk>/pause/", runs.run_pause, name="run_pause"),
    path("runs/<int:pk>/resume/", runs.run_resume, name="run_resume"),
    path("runs/<int:pk>/cancel/", runs.run_cancel, name="run_cancel"),
    path("runs/<int:pk>/for-real/", runs.run_for_real, name="run_for_real"),
    path("records/", records.record_list, name="record_list"),
    path("records/export.csv", records.record_export, name="record_export"),
    path("records/<int:pk>/", records.record_detail, name="record_detail"),
    path("records/<int:pk>/lookup/", records.record_lookup, name="record_lookup"),
    path("deadletters/", deadletters.deadletter_list, name="deadletter_list"),
    path("deadletters/export.csv", deadletters.deadletter_export, name="deadletter_export"),
    path("deadletters/retry/", deadletters.deadletter_retry_filtered, name="deadletter_retry_filtered"),
    path("deadletters/<int:pk>/retry/", deadletters.deadletter_retry, name="deadletter_retry"),
    path("deadletters/<int:pk>/discard/", deadletters.deadletter_discard, name="deadletter_discard"),
    path("discrepancies/", discrepancies.discrepancy_list, name="discrepancy_list"),
    path("discrepancies/export.csv", discrepancies.discrepancy_export, name="discrepancy_export"),
    path(
        "discrepancies/approve/",
        discrepancies.discrepancy_approve_filtered,
        name="discrepancy_approve_filtered",
    ),
    path("discrepancies/<int:pk>/", discrepancies.discrepancy_detail, name="discrepancy_detail"),
    path("discrepancies/<int:pk>/approve/", discrepancies.discrepancy_approve, name="discrepancy_approve"),
    path("discrepancies/<int:pk>/reject/", discrepancies.discrepancy_reject, name="discrepancy_reject"),
    path("discrepancies/<int:pk>/comment/", discrepancies.discrepancy_comment, name="discrepancy_comment"),
    path("conflicts/", conflicts.conflict_list, name="conflict_list"),
    path("conflicts/<int:pk>/", conflicts.conflict_detail, name="conflict_detail"),
    path("conflicts/<int:pk>/propose/", conflicts.conflict_propose, name="conflict_propose"),
    path("conflicts/<int:pk>/comment/", conflicts.conflict_comment, name="conflict_comment"),
    path("resolutions/", resolutions.resolution_list, name="resolution_list"),
    path("resolutions/<int:pk>/approve/", resolutions.resolution_approve, name="resolution_approve"),
    path("resolutions/<int:pk>/reject/", resolutions.resolution_reject, name="resolution_reject"),
    path("overrides/<int:pk>/", resolutions.override_detail, name="override_detail"),
]
