"""Encoding `multipart/form-data` bodies (RFC 7578) for uploads the gateway forwards.

Parsing a client's form is python-multipart's, through Starlette; writing one is this: fields
in order, each file with its name and content type, one random boundary.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FilePart:
    field: str  # the form field ("file", "image[]")
    filename: str
    content_type: str
    data: bytes


def _quoted(value: str) -> str:
    """A header parameter value: quotes and line breaks escaped as browsers do (RFC 7578 §4.2)."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def encode(
    fields: Mapping[str, str | Sequence[str]], files: Sequence[FilePart]
) -> tuple[bytes, str]:
    """The body and its Content-Type; a field given a list is repeated, once per value."""
    boundary = f"tollgate-{secrets.token_hex(16)}"
    parts: list[bytes] = []
    for name, value in fields.items():
        for item in [value] if isinstance(value, str) else value:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"'
                f"\r\n\r\n{item}\r\n".encode()
            )
    for part in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(part.field)}"; '
            f'filename="{_quoted(part.filename)}"\r\nContent-Type: {part.content_type}'
            "\r\n\r\n".encode()
        )
        parts.append(part.data)
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
