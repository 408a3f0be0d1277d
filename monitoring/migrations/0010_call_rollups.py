"""Rollups of the call log per minute, 5 and 15 minutes and 2 hours, counted from the rows already there; an index on the
call log's time for the rules, /metrics and retention."""

import django.contrib.postgres.fields
import django.db.models.deletion
from django.db import migrations, models


def count_existing_calls(apps, schema_editor):
    from monitoring.rollups import rebuild

    rebuild()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0009_alert_kinds"),
        ("sync", "0012_batch_size_2000"),
    ]

    operations = [
        migrations.CreateModel(
            name="CallRollup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("span_s", models.PositiveIntegerField(help_text="The width of the bucket in seconds (rollups.SPANS).")),
                ("bucket", models.DateTimeField(help_text="The start of the bucket.")),
                ("function", models.CharField(max_length=100)),
                ("outcome", models.CharField(max_length=20)),
                ("errorcode", models.CharField(blank=True, max_length=200)),
                (
                    "http_status",
                    models.PositiveSmallIntegerField(default=0, help_text="0 when there was no HTTP answer."),
                ),
                ("calls", models.PositiveIntegerField()),
                ("duration_ms_sum", models.FloatField()),
                ("duration_ms_max", models.FloatField()),
                (
                    "histogram",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.PositiveIntegerField(),
                        help_text="Calls per latency bucket (rollups.BOUNDS_MS).",
                        size=None,
                    ),
                ),
                ("last_at", models.DateTimeField()),
            ],
        ),
        migrations.AddIndex(
            model_name="calllog",
            index=models.Index(fields=["started_at"], name="call_started"),
        ),
        migrations.AddField(
            model_name="callrollup",
            name="site",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="sync.moodlesite"
            ),
        ),
        migrations.AddIndex(
            model_name="callrollup",
            index=models.Index(fields=["span_s", "bucket"], name="rollup_span_bucket"),
        ),
        migrations.AddConstraint(
            model_name="callrollup",
            constraint=models.UniqueConstraint(
                fields=("site", "span_s", "bucket", "function", "outcome", "errorcode", "http_status"),
                name="rollup_key",
            ),
        ),
        migrations.RunPython(count_existing_calls, migrations.RunPython.noop),
    ]
