"""Updating or inserting many rows of one model at once: one statement, executed for every row.

Django's bulk_update builds a CASE per column over all rows, and bulk_create
compiles every field of every object, both of which cost far more per row than
the rows themselves; the collector and triage write thousands.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection, models


def update_many(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Set `fields` (column names) to each row's values; the last value of a row is its id.

    JSON fields are encoded here, datetimes adapted to the database.
    """
    if not rows:
        return
    json_fields = {f.column for f in model._meta.concrete_fields if isinstance(f, models.JSONField)}
    json_param = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
    assignments = ", ".join(f"{f} = {json_param if f in json_fields else '%s'}" for f in fields)
    encode = [f in json_fields for f in fields]
    params = []
    for row in rows:
        values: list[Any] = []
        for value, is_json in zip(row, [*encode, False], strict=True):
            if is_json:
                value = json.dumps(value)
            elif isinstance(value, datetime):
                value = connection.ops.adapt_datetimefield_value(value)
            values.append(value)
        params.append(values)
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {table} SET {assignments} WHERE id = %s", params)  # noqa: S608


def insert_many(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert rows of plain values (ints, floats, text, None) into `fields` (column names)."""
    if not rows:
        return
    table = model._meta.db_table
    marks = ", ".join(["%s"] * len(fields))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} ({', '.join(fields)}) VALUES ({marks})",  # noqa: S608
            rows,
        )
