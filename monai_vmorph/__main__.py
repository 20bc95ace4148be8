"""``python -m monai_vmorph``: the ``monai-vmorph`` command line."""

import sys

from monai_vmorph.cli import main

if __name__ == "__main__":
    sys.exit(main())
