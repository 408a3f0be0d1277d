"""The upload size limit, applied while the request is read.

Django has no setting that bounds an uploaded file: DATA_UPLOAD_MAX_MEMORY_SIZE leaves file data out, and
FILE_UPLOAD_MAX_MEMORY_SIZE only decides memory or temporary file. Without this handler a 2 GB upload would
be written to disk in full before the form could refuse it. With it, the bytes past UPLOAD_MAX_MB are
counted and dropped, and the form receives an empty stand-in that carries the real size, so it refuses the
file by name and size like any other form error (not a 400 or a 500).
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler


def max_upload_bytes() -> int:
    return settings.UPLOAD_MAX_MB * 1024 * 1024


def check_csv_upload(upload, too_big_advice: str) -> None:
    """The checks every page that takes a CSV file makes: the size limit (naming the file, its size and
    the setting) and the kind of file."""
    if upload.size > max_upload_bytes():
        raise ValidationError(
            f"{upload.name} is {upload.size / (1024 * 1024):,.1f} MB; uploads are limited to "
            f"{settings.UPLOAD_MAX_MB} MB (UPLOAD_MAX_MB). {too_big_advice}"
        )
    if not upload.name.lower().endswith((".csv", ".txt")):
        raise ValidationError("Upload a .csv file (UTF-8, with a header row).")


class OversizedUpload(UploadedFile):
    """An upload larger than the limit: its name and size, none of its bytes."""

    oversized = True

    def __init__(self, name: str, content_type: str | None, size: int) -> None:
        super().__init__(file=None, name=name, content_type=content_type, size=size)

    def chunks(self, chunk_size=None):
        raise ValueError("an oversized upload has no content; the form refuses it")


class UploadSizeLimit(FileUploadHandler):
    """First in FILE_UPLOAD_HANDLERS: passes each chunk on until the file passes the limit, then keeps
    counting but passes nothing on, and completes the file as an OversizedUpload."""

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0
        self.over = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > max_upload_bytes():
            self.over = True
        return None if self.over else raw_data

    def file_complete(self, file_size: int) -> UploadedFile | None:
        if not self.over:
            return None  # the next handler (memory or temporary file) completes it
        return OversizedUpload(self.file_name, self.content_type, self.received)
