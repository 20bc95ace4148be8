"""The ``monai-vmorph`` command line: ``register``, ``warp``, ``evaluate`` and ``report`` on NIfTI scans."""

from monai_vmorph.cli.main import build_parser, entry_point, main

__all__ = ["build_parser", "entry_point", "main"]
