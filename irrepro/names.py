"""Names that become paths: a study's name is a folder under reports/ and figures/, so it is
checked first; a shared store may hold experiments named anything."""

from __future__ import annotations

import re

_SAFE = re.compile(r"[A-Za-z0-9_.-]+")


def folder_name(name: str, key: str) -> str:
    """`name` when it can name one folder (letters, digits, '-', '_', '.'; not '.' or '..'),
    else ValueError naming `key`."""
    if not _SAFE.fullmatch(name) or set(name) == {"."}:
        raise ValueError(f"{key}={name!r} cannot name a folder: use letters, digits, '-', '_' "
                         "and '.' only")
    return name
