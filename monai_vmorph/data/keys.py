"""The dictionary keys, under their historical ``monai_vmorph.data.keys`` name (defined in :mod:`monai_vmorph.keys`,
the lowest layer, so that losses and transforms use them without importing :mod:`monai_vmorph.data`)."""

from monai_vmorph import keys as _keys
from monai_vmorph.keys import *  # noqa: F403

__all__ = list(_keys.__all__)
