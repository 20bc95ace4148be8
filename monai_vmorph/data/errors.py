"""The exception raised for bad input data (missing files, malformed datalists, unreadable images)."""

from __future__ import annotations

from monai_vmorph.errors import UserError

__all__ = ["DataError"]


class DataError(UserError, ValueError):
    """Bad input data, reported in one line that names the offending path and says what to do.

    The command-line interface prints the message without a traceback, so the message must be
    self-contained, e.g. ``"label file /d/labelsTr/x.nii.gz does not exist; ..."``. It subclasses
    :class:`~monai_vmorph.errors.UserError` (the package's user-mistake type) and :class:`ValueError`, so callers
    that already catch ``ValueError`` keep working.
    """
