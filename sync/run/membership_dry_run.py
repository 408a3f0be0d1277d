"""What a dry run says of the courses and cohorts the source names, before anything is sent: a course
Moodle does not have, one without manual enrolment, a role Moodle refused to let the token assign there
in an earlier run, a cohort the real run would create. Read-only: nothing is created or saved."""

from __future__ import annotations

from ..choices import MembershipKind
from ..mapping import Mapping
from ..models import MembershipTarget, SyncRun
from ..moodle.client import MoodleClient
from .membership_targets import TargetResolver


def check_targets(
    client: MoodleClient, run: SyncRun, wanted: set[tuple[str, str, str, str]], mapping: Mapping
) -> list[str]:
    """One sentence per course or cohort that needs a person's attention (or will be created)."""
    if not wanted:
        return []
    saved = {
        (t.kind, t.key): t
        for t in MembershipTarget.objects.filter(site=run.site, key__in={key for _, key, _, _ in wanted})
    }
    targets = []
    for kind, key, match, name in sorted(wanted):
        target = saved.get((kind, key)) or MembershipTarget(
            site=run.site, kind=kind, key=key, match=match, name=name
        )
        target.resolved_at = None  # asked afresh
        targets.append(target)
    TargetResolver(client, run, cohort_category=mapping.memberships.cohort_category, dry_run=True).resolve(
        targets
    )
    problems = []
    for target in targets:
        if target.problem:
            problems.append(f"{target.get_kind_display()} {target.key}: {target.problem}")
        elif target.kind == MembershipKind.COHORT and target.moodle_id is None:
            problems.append(
                f"Cohort {target.key} is not in Moodle; the run will create it as “{target.name}”"
            )
    return problems
