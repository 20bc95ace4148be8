"""Every third-party module the package imports is a declared dependency: a fresh ``pip install .`` (or a wheel)
must run ``register`` without packages installed by hand (SciPy was missing once: the wheel crashed on import)."""

import ast
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"ignite": "pytorch-ignite", "yaml": "pyyaml", "PIL": "pillow"}


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def _imported_top_level(folder: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return found


def test_every_third_party_import_of_the_package_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _requirement_names(project["dependencies"])
    imported = _imported_top_level(ROOT / "monai_vmorph")
    third_party = {
        name: path
        for name, path in imported.items()
        if name not in sys.stdlib_module_names and name not in ("monai_vmorph", "__future__")
    }
    assert {"torch", "monai", "numpy", "scipy", "nibabel"} <= set(third_party)  # the scan saw the imports
    missing = {
        name: str(path.relative_to(ROOT))
        for name, path in third_party.items()
        if DISTRIBUTIONS.get(name, name).lower() not in declared
    }
    assert not missing, f"imported but not in pyproject's dependencies: {missing}"


def test_the_test_tools_are_in_the_dev_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = _requirement_names(project["optional-dependencies"]["dev"])
    assert {"pytest", "ruff", "jsonschema"} <= dev  # jsonschema: MONAI's verify_metadata, used by the bundle tests
