"""The package's layers point one way: ``io``, ``losses``, ``metrics``, ``networks``, ``transforms`` and the
``optimisation`` above them import nothing from the layers above (``data``, ``engines``, ``pipeline``, ``cli``)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "monai_vmorph"
LOWER = ("io", "losses", "metrics", "networks", "transforms", "optimisation")
UPPER = ("monai_vmorph.data", "monai_vmorph.engines", "monai_vmorph.pipeline", "monai_vmorph.cli")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("layer", LOWER)
def test_lower_layers_import_nothing_from_upper_layers(layer):
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files
    offending = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in files
        for name in _imports(path)
        if any(name == upper or name.startswith(upper + ".") for upper in UPPER)
    }
    assert not offending, sorted(offending)
