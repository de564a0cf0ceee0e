"""Updating many rows of one model at once: one UPDATE statement, executed for every row.

Django's bulk_update builds a CASE per column over all rows, which costs far more
per row than the rows themselves; the collector and triage update thousands.
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
