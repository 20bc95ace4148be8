"""The one exception type for user mistakes, raised anywhere in the package and reported at the edge.

Every layer raises :class:`UserError` (or a subclass such as :class:`monai_vmorph.data.DataError`) for a mistake
the user can fix: a missing file, a malformed datalist, a bad option. The edges (the ``monai-vmorph`` command, the
bundle runner's entry points) turn it into one line ``error: <message>`` and exit status 2, with no traceback and no
partial output. The message must say what was wrong and what to do, e.g.
``"--fixed a.nii.gz does not exist; check the path"``.
"""

from __future__ import annotations

__all__ = ["DataError", "UserError", "find_user_error"]


class UserError(Exception):
    """A user mistake, reported as one line (what was wrong and what to do) and exit status 2."""


class DataError(UserError, ValueError):
    """Bad input data (missing files, malformed datalists, unreadable images or fields), in one line that names the
    offending path and says what to do, e.g. ``"label file /d/labelsTr/x.nii.gz does not exist; ..."``.

    A :class:`UserError`, and a :class:`ValueError` so that callers that already catch ``ValueError`` keep working.
    Also importable as ``monai_vmorph.data.DataError``.
    """


def find_user_error(error: BaseException | None) -> UserError | None:
    """The first :class:`UserError` in ``error``'s chain (itself, then its ``__cause__`` / ``__context__``).

    Frameworks wrap what they call: MONAI re-raises an error of a config expression or component as
    ``RuntimeError(...) from error``, and a data loader re-raises a transform's error the same way. An edge that
    reports user mistakes looks through that chain for the mistake itself.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ if error.__cause__ is not None else error.__context__
    return None
