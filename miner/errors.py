"""Exceptions that mean "bad input or environment": the CLI prints them as one line, the API maps them to 4xx."""

from __future__ import annotations

# ValueError covers AudioError, SpaceMismatchError, corpus and index format errors (all subclass it);
# FileNotFoundError / PermissionError cover missing inputs; ImportError a missing optional extra.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    PermissionError,
    ImportError,
    KeyError,
)
