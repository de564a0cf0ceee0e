"""Schemas an admin uploads so that Avro and Protobuf bodies show as structures.

The file itself is kept in the database (a few kilobytes at most), so every web
process and worker reads the same schemas with no shared disk. A schema that does
not parse is never saved: `save` checks it as the admin form does.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from brokers import schemas
from brokers.schemas import SchemaError

MAX_SCHEMA_BYTES = 1024 * 1024  # an .avsc or a FileDescriptorSet is far smaller


class Schema(models.Model):
    """An Avro or Protobuf schema, and which message bodies it reads."""

    AVRO, PROTOBUF = schemas.AVRO, schemas.PROTOBUF
    KINDS = [(AVRO, "Avro (.avsc JSON)"), (PROTOBUF, "Protobuf (FileDescriptorSet)")]

    name = models.CharField(
        max_length=128,
        unique=True,
        help_text='How pages name it: "Avro (orders-value)". A registry subject reads well here.',
    )
    kind = models.CharField(max_length=8, choices=KINDS)
    destination = models.CharField(
        "destination pattern",
        max_length=1024,
        blank=True,
        help_text="Queue, topic or stream names (or keys) it reads, as a shell pattern: "
        "orders, orders.*, *-events. Empty: any destination, if a header is given.",
    )
    header_name = models.CharField(
        max_length=255,
        blank=True,
        help_text="A header the message must carry, such as a type name. With a pattern too, "
        "both must hold.",
    )
    header_value = models.CharField(
        max_length=1024, blank=True, help_text="The value the header must have; empty: any."
    )
    message_type = models.CharField(
        max_length=512,
        blank=True,
        help_text="Protobuf: the message's full name, such as shop.v1.Order. It may be left "
        "empty when the set holds a single message type.",
    )
    content = models.BinaryField(editable=False)
    created_by = models.CharField(max_length=150, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Each process keeps the schemas parsed, and parses them again when this moves.
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.clean()  # never store a schema no page could read a body with
        super().save(*args, **kwargs)

    def compiled(self) -> schemas.Schema:
        """The schema parsed, ready to read bodies; ValidationError saying why it cannot be."""
        try:
            return schemas.compile_schema(
                name=self.name,
                kind=self.kind,
                content=bytes(self.content or b""),
                message_type=self.message_type,
                destination=self.destination,
                header=self.header_name,
                header_value=self.header_value,
            )
        except SchemaError as exc:
            # Not a form field: the file's errors are general; the admin shows them by its upload.
            field = exc.field if exc.field != "content" else None
            raise ValidationError({field: str(exc)} if field else str(exc)) from None

    def clean(self) -> None:
        if not self.content:
            raise ValidationError("A schema needs its file: the .avsc, or the FileDescriptorSet.")
        if len(self.content) > MAX_SCHEMA_BYTES:
            raise ValidationError(f"A schema file is at most {MAX_SCHEMA_BYTES:,} bytes.")
        if self.kind == self.AVRO and self.message_type:
            raise ValidationError({"message_type": "Only a Protobuf schema names a message type."})
        compiled = self.compiled()
        self.message_type = compiled.message_type
