from django.db import migrations, models


class Migration(migrations.Migration):
    """Alert texts name their instants as {placeholders} with the instants in `times`, so each reader sees
    them in their own zone. Rows written before keep their text ("04:06 UTC"); the pages re-read those."""

    dependencies = [
        ("monitoring", "0012_call_site_outcome_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="alert",
            name="times",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Instants the title and detail name as {placeholders}, in ISO 8601 (UTC): shown in "
                "the reader's zone.",
            ),
        ),
    ]
