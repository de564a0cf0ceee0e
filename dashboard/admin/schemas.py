"""The admin of body schemas: an Avro .avsc or a Protobuf FileDescriptorSet, uploaded and checked."""

from __future__ import annotations

import hashlib
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from dashboard.admin import AdminRoleMixin
from dashboard.models import Schema
from dashboard.models.schemas import MAX_SCHEMA_BYTES


class SchemaForm(forms.ModelForm):
    upload = forms.FileField(
        label="Schema file",
        required=False,
        help_text="Avro: the .avsc JSON. Protobuf: what `protoc --include_imports "
        "--descriptor_set_out=FILE your.proto` writes. On a change, leave it empty to keep "
        "the stored file.",
    )

    class Meta:
        model = Schema
        fields = ["name", "kind", "destination", "header_name", "header_value", "message_type"]

    def clean_upload(self) -> bytes | None:
        upload = self.cleaned_data.get("upload")
        if upload is None:
            if not self.instance.pk:
                raise ValidationError("Choose the schema file.")
            return None
        if upload.size > MAX_SCHEMA_BYTES:
            raise ValidationError(f"A schema file is at most {MAX_SCHEMA_BYTES:,} bytes.")
        content: bytes = upload.read()
        return content

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("upload") is not None:
            self.instance.content = data["upload"]
        return data

    def _post_clean(self) -> None:
        super()._post_clean()
        # What is wrong with the file belongs beside the file's field, not above the form;
        # when that field has its own error (no file, too big), the rest follows from it.
        general = self.errors.pop("__all__", None)
        if general and "upload" not in self.errors:
            self.add_error("upload", list(general))


@admin.register(Schema)
class SchemaAdmin(AdminRoleMixin, admin.ModelAdmin):
    form = SchemaForm
    list_display = ["name", "kind", "destination", "header_name", "message_type", "created_by"]
    list_filter = ["kind"]
    search_fields = ["name", "destination", "message_type"]
    readonly_fields = ["stored_file", "created_by", "created_at", "updated_at"]

    @admin.display(description="stored file")
    def stored_file(self, obj: Schema) -> str:
        content = bytes(obj.content or b"")
        if not content:
            return "-"
        return f"{len(content):,} bytes, SHA-256 {hashlib.sha256(content).hexdigest()}"

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user.get_username()
        super().save_model(request, obj, form, change)
