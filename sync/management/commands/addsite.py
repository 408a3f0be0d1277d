"""Register a Moodle site and its web-service token, verified before anything is stored."""

import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from sync import source_setup
from sync.choices import TokenStatus
from sync.mapping import parse_languages
from sync.models import MoodleSite, ServiceToken
from sync.moodle.client import SYNC_FUNCTIONS, MoodleClient
from sync.moodle.errors import SeamError
from sync.run.connect import shared_redis


class Command(BaseCommand):
    help = (
        "Add a Moodle site. The token is read from standard input (never from the command line, where "
        "it would land in the shell history) and verified with core_webservice_get_site_info."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--url", required=True, help="the Moodle site's root URL")
        parser.add_argument("--name", help="display name (default: Moodle's site name)")
        parser.add_argument(
            "--token-stdin", action="store_true", required=True, help="read the token from stdin"
        )
        parser.add_argument("--label", default="main", help="a name for the token (default: main)")
        parser.add_argument(
            "--time-zone", default="UTC", help="an IANA zone name, e.g. Europe/Berlin (default: UTC)"
        )
        parser.add_argument(
            "--languages",
            default="en",
            help="the language packs installed on the site, comma-separated (default: en)",
        )

    def handle(self, *args, slug: str, url: str, name: str | None, label: str, time_zone: str, **options):
        if MoodleSite.objects.filter(slug=slug).exists():
            raise CommandError(f"site {slug} exists; add or rotate its tokens on the token page")
        try:
            languages = ",".join(parse_languages(options["languages"]))
        except ValueError as exc:
            raise CommandError(f"--languages: {exc}") from None
        try:
            source_setup.check_time_zone(time_zone)
        except source_setup.SetupError as exc:
            raise CommandError(f"--time-zone: {exc}") from None
        token = sys.stdin.readline().strip()
        if not token:
            raise CommandError("no token on standard input")
        url = url.rstrip("/").removesuffix("/webservice/rest/server.php")
        try:
            with MoodleClient(url, token, site=slug, redis=shared_redis()) as client:
                check = client.preflight(SYNC_FUNCTIONS)
        except SeamError as exc:
            raise CommandError(f"could not reach Moodle at {url}: {exc}") from None
        if not check.ok:
            raise CommandError("the token cannot run a sync: " + "; ".join(check.problems))
        with transaction.atomic():
            # The same save as the Add-a-site page: audited, and its schedules made in this transaction.
            site = source_setup.save_site(
                MoodleSite(
                    slug=slug,
                    name=name or check.sitename,
                    base_url=url,
                    time_zone=time_zone,
                    languages=languages,
                ),
                None,
            )
            stored = ServiceToken(
                site=site,
                label=label,
                status=TokenStatus.ACTIVE,
                last_verified_at=timezone.now(),
                service_shortname="",
            )
            stored.set_token(token)
            stored.save()
        self.stdout.write(
            f"Added site {site.slug} ({site.name}): Moodle {check.release}, service user {check.username}, "
            f"{len(check.functions)} functions; token {stored.masked} verified and stored encrypted."
        )
        page = reverse("sync:source_edit", args=[site.slug])
        self.stdout.write(
            f"Next: set up its source and mapping on the page {page}, or with "
            f"python manage.py addsource {site.slug} --kind csv ... --mapping FILE.json"
        )
