"""The command line's name for :class:`monai_vmorph.errors.UserError` (the package's one user-error type)."""

from __future__ import annotations

from monai_vmorph.errors import UserError

__all__ = ["CLIError"]

CLIError = UserError
