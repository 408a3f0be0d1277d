"""Finding the courses and cohorts a run's memberships name, once per run.

A course is looked up by its shortname or idnumber (`core_course_get_courses_by_field`, one call per
course, cached on its MembershipTarget for the rest of the run); it must have an enabled manual enrolment
instance, or nobody can be enrolled through the web services. Cohorts are listed in one call
(`core_cohort_get_cohorts`); the missing ones are created together (`core_cohort_create_cohorts`), in
the system context or the category the mapping names.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.utils import timezone

from ..choices import MembershipKind
from ..models import MembershipTarget, SyncRun
from ..moodle.client import MoodleClient
from ..moodle.errors import MoodleError

NO_MANUAL = "has no enabled manual enrolment method, so the hub cannot enrol anyone in it"


class NoManualEnrolment(Exception):
    """Courses the run would enrol people in have no manual enrolment: the run stops, naming them."""

    def __init__(self, targets: list[MembershipTarget]) -> None:
        self.targets = targets
        names = ", ".join(t.label for t in targets)
        super().__init__(
            f'course{"s" if len(targets) != 1 else ""} {names} {NO_MANUAL}; add the "Manual enrolments" '
            "method in Moodle (the course's Participants > Enrolment methods) or take the course out of "
            "the source, then resume"
        )


class TargetResolver:
    """Resolves MembershipTargets through the client; with `dry_run` nothing is created."""

    def __init__(
        self, client: MoodleClient, run: SyncRun, *, cohort_category: int | None, dry_run: bool
    ) -> None:
        self.client = client
        self.run = run
        self.cohort_category = cohort_category
        self.dry_run = dry_run
        self.since = run.started_at or timezone.now()

    def resolve(self, targets: Iterable[MembershipTarget]) -> None:
        """Set moodle_id, name and problem on each target not resolved yet in this run (saved unless dry)."""
        todo = [t for t in targets if t.resolved_at is None or t.resolved_at < self.since]
        courses = [t for t in todo if t.kind == MembershipKind.COURSE]
        cohorts = [t for t in todo if t.kind == MembershipKind.COHORT]
        for target in courses:
            self._course(target)
        if cohorts:
            self._cohorts(cohorts)
        now = timezone.now()
        for target in todo:
            target.resolved_at = now
            if not self.dry_run and target.pk:
                target.save(update_fields=["moodle_id", "name", "problem", "resolved_at"])

    def _course(self, target: MembershipTarget) -> None:
        found = self.client.get_courses_by_field(target.match, target.key)
        if not found:
            target.moodle_id, target.problem = (
                None,
                (
                    f"no course with {target.match} {target.key} in Moodle "
                    "(or the service user may not see it)"
                ),
            )
            return
        course = found[0]
        target.moodle_id = int(course["id"])
        target.name = str(course.get("fullname") or course.get("shortname") or "")[:255]
        methods = course.get("enrollmentmethods")
        if methods is not None and "manual" not in methods:
            target.problem = f"course {target.key} {NO_MANUAL}"
        elif not (self.dry_run and "may not assign" in target.problem):
            # A role Moodle refused in an earlier run is still named by a dry run; a real run tries again.
            target.problem = ""

    def _cohorts(self, targets: list[MembershipTarget]) -> None:
        existing = {str(c.get("idnumber") or ""): c for c in self.client.get_cohorts()}
        missing = [t for t in targets if t.key not in existing]
        for target in targets:
            cohort = existing.get(target.key)
            if cohort is not None:
                target.moodle_id, target.name, target.problem = (
                    int(cohort["id"]),
                    str(cohort["name"])[:255],
                    "",
                )
        if not missing or self.dry_run:
            for target in missing:
                target.moodle_id, target.problem = None, ""
            return
        context = (
            {"type": "id", "value": str(self.cohort_category)}
            if self.cohort_category
            else {"type": "system", "value": ""}
        )
        payload = [
            {"categorytype": context, "name": t.name or t.key, "idnumber": t.key, "visible": 1}
            for t in missing
        ]
        try:
            made = self.client.create_cohorts(payload)
        except MoodleError as error:
            if not error.ambiguous:
                raise
            made = list(self.client.get_cohorts())  # the answer was lost: what did Moodle make?
        by_idnumber = {str(c.get("idnumber") or ""): c for c in made}
        for target in missing:
            cohort = by_idnumber.get(target.key)
            if cohort is None:
                target.moodle_id, target.problem = None, f"cohort {target.key} could not be created in Moodle"
            else:
                target.moodle_id, target.problem = int(cohort["id"]), ""

    @staticmethod
    def without_manual(targets: Iterable[MembershipTarget]) -> list[MembershipTarget]:
        return [t for t in targets if t.kind == MembershipKind.COURSE and NO_MANUAL in t.problem]
