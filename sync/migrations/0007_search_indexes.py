"""Indexes the record search and the default lists use. The prefix search (istartswith) compiles to
UPPER(col::text) LIKE UPPER('x%'), which only a text_pattern_ops index on that same expression serves in a
database whose collation is not C."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0006_reconciliation_roles"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="syncrecord",
            name="record_username_upper",
        ),
        migrations.RemoveIndex(
            model_name="syncrecord",
            name="record_email_upper",
        ),
        migrations.RemoveIndex(
            model_name="syncrecord",
            name="record_name_upper",
        ),
        migrations.AddIndex(
            model_name="deadletter",
            index=models.Index(fields=["status", "-last_failed_at"], name="deadletter_status"),
        ),
        migrations.AddIndex(
            model_name="syncrecord",
            index=models.Index(fields=["external_id"], name="record_external_id"),
        ),
        migrations.AddIndex(
            model_name="syncrun",
            index=models.Index(fields=["-created_at"], name="run_created"),
        ),
        migrations.RunSQL(
            [
                f'CREATE INDEX record_{name}_prefix ON sync_syncrecord (UPPER(("{column}")::text) text_pattern_ops)'
                for name, column in (("username", "username"), ("email", "email"), ("name", "display_name"))
            ],
            reverse_sql=[f"DROP INDEX record_{name}_prefix" for name in ("username", "email", "name")],
        ),
    ]
