"""monai-vmorph: VoxelMorph learned deformable image registration as a MONAI plugin."""

__version__ = "0.1.0"
