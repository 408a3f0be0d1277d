"""Bulk writes the way PostgreSQL does them fast: COPY for new rows, one UPDATE ... FROM unnest() for changed
ones.

Django's bulk_create and bulk_update are general: bulk_update builds a CASE per row and field, and both
convert every value through the field's full save path in Python. For the thousands of rows a sync batch
writes, that took longer than Moodle took to create the people (measured in bench/RESULTS.md). These
helpers read plain values (text, numbers, booleans, keys, aware datetimes) straight from the object, and
keep Django's own conversion for the rest (JSON, auto_now), so what is stored is what `save()` would store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from django.db import connection, models

# Fields whose value on the object is already what the database takes.
_PLAIN = (
    models.CharField, models.TextField, models.IntegerField, models.BooleanField, models.ForeignKey,
    models.FloatField,
)  # fmt: skip


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def _reader(field: models.Field, add: bool) -> Callable[[models.Model], Any]:
    """How to read one field's database value off an object, as save() would."""
    if getattr(field, "auto_now", False) or (add and getattr(field, "auto_now_add", False)):
        return lambda obj: field.pre_save(obj, add)
    if isinstance(field, models.JSONField):
        return lambda obj: connection.ops.adapt_json_value(getattr(obj, field.attname), field.encoder)
    if isinstance(field, _PLAIN):
        return attrgetter(field.attname)
    if isinstance(field, models.DateTimeField):
        return attrgetter(field.attname)  # the hub only sets aware datetimes
    return lambda obj: field.get_db_prep_save(field.pre_save(obj, add), connection)


def insert_rows(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    """COPY the objects into the model's table. Their primary keys are not read back: use it for rows the
    caller does not touch again (history, staged records)."""
    if not objs:
        return
    meta = model._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    readers = [_reader(field, add=True) for field in fields]
    columns = ", ".join(_quote(field.column) for field in fields)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {_quote(meta.db_table)} ({columns}) FROM STDIN") as copy,
    ):
        for obj in objs:
            copy.write_row([read(obj) for read in readers])


def update_rows(model: type[models.Model], objs: Sequence[models.Model], field_names: Sequence[str]) -> None:
    """Write `field_names` of every object (by primary key) in one statement; like save(), it also sets the
    model's auto_now fields."""
    if not objs:
        return
    meta = model._meta
    named = [meta.get_field(name) for name in field_names]
    auto_now = [f for f in meta.concrete_fields if getattr(f, "auto_now", False) and f not in named]
    fields = [meta.pk, *named, *auto_now]
    columns = [_quote(field.column) for field in fields]
    arrays = [[read(obj) for obj in objs] for read in (_reader(field, add=False) for field in fields)]
    unnest = ", ".join(f"%s::{field.db_type(connection)}[]" for field in fields)
    assignments = ", ".join(f"{column} = v.{column}" for column in columns[1:])
    # Only the model's own table and column names are formatted in; every value is a parameter.
    sql = (
        f"UPDATE {_quote(meta.db_table)} AS t SET {assignments} "  # noqa: S608
        f"FROM unnest({unnest}) AS v({', '.join(columns)}) WHERE t.{columns[0]} = v.{columns[0]}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, arrays)
