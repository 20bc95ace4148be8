"""``python -m monai_vmorph``: the ``monai-vmorph`` command line."""

import sys

from monai_vmorph.cli import entry_point

if __name__ == "__main__":
    sys.exit(entry_point())
