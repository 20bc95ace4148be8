"""The exception raised for bad input data, :class:`monai_vmorph.errors.DataError`, under its ``data`` name."""

from monai_vmorph.errors import DataError

__all__ = ["DataError"]
