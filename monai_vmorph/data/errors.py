"""The exception raised for bad input data (missing files, malformed datalists, unreadable images)."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data, reported in one line that names the offending path and says what to do.

    The command-line interface prints the message without a traceback, so the message must be
    self-contained, e.g. ``"label file /d/labelsTr/x.nii.gz does not exist; ..."``. It subclasses
    :class:`ValueError` so callers that already catch ``ValueError`` keep working.
    """
