"""The exception for user mistakes on the command line."""

from __future__ import annotations

__all__ = ["CLIError"]


class CLIError(Exception):
    """A user mistake: ``monai-vmorph`` prints ``monai-vmorph: error: <message>`` and exits with status 2.

    The message must say what was wrong and what to do, in one line, e.g.
    ``"--fixed a.nii.gz does not exist; check the path"``.
    """
