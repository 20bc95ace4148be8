"""Instance optimisation below the pipeline: the deformable stage's working grid and its coarse-to-fine optimiser.

:mod:`~monai_vmorph.optimisation.grid` builds the working grid on the fixed scan's own voxels;
:mod:`~monai_vmorph.optimisation.deformable` optimises a stationary velocity on it (Greedy's scheme). Both import
only from the layers below (``losses``, ``metrics``, ``networks`` blocks).
"""

from monai_vmorph.optimisation.deformable import (
    DEFORMABLE_SIMILARITIES,
    DeformableLevel,
    DeformableRecord,
    DeformableSettings,
    optimise_velocity,
    unfold,
)
from monai_vmorph.optimisation.grid import DeformableGrid, deformable_grid, edge_taper

__all__ = [
    "DEFORMABLE_SIMILARITIES",
    "DeformableGrid",
    "DeformableLevel",
    "DeformableRecord",
    "DeformableSettings",
    "deformable_grid",
    "edge_taper",
    "optimise_velocity",
    "unfold",
]
