"""The one exception type for user mistakes, raised anywhere in the package and reported at the edge.

Every layer raises :class:`UserError` (or a subclass such as :class:`monai_vmorph.data.DataError`) for a mistake
the user can fix: a missing file, a malformed datalist, a bad option. The edges (the ``monai-vmorph`` command, the
bundle runner's entry points) turn it into one line ``error: <message>`` and exit status 2, with no traceback and no
partial output. The message must say what was wrong and what to do, e.g.
``"--fixed a.nii.gz does not exist; check the path"``.
"""

from __future__ import annotations

__all__ = ["DataError", "UserError"]


class UserError(Exception):
    """A user mistake, reported as one line (what was wrong and what to do) and exit status 2."""


class DataError(UserError, ValueError):
    """Bad input data (missing files, malformed datalists, unreadable images or fields), in one line that names the
    offending path and says what to do, e.g. ``"label file /d/labelsTr/x.nii.gz does not exist; ..."``.

    A :class:`UserError`, and a :class:`ValueError` so that callers that already catch ``ValueError`` keep working.
    Also importable as ``monai_vmorph.data.DataError``.
    """
