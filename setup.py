"""Package list for setuptools: monai_vmorph plus the shipped bundles folder as ``monai_vmorph.bundles``."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["monai_vmorph*"]), "monai_vmorph.bundles"])
