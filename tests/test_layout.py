"""The package's floors: no module imports from an area above its own (see ``wsm/__init__.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WSM = Path(__file__).resolve().parents[1] / "wsm"
FLOORS = {
    "core": 1,
    "store": 2,
    "waha": 2,
    "metrics": 2,
    "ingest": 3,
    "conversation": 3,
    "delivery": 3,
    "schedule": 3,
    "agent": 3,
    "providers": 3,
    "attendance": 4,
    "ops": 5,
    "console": 5,
    "adapters": 5,
}


def imported_areas(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found |= {n.split(".")[1] for n in names if n.startswith("wsm.") and n.count(".") >= 1}
    return found


def test_every_area_has_a_floor() -> None:
    areas = {p.name for p in WSM.iterdir() if (p / "__init__.py").is_file()}
    assert areas == set(FLOORS)


@pytest.mark.parametrize("path", sorted(WSM.glob("*/*.py")), ids=lambda p: str(p.relative_to(WSM)))
def test_imports_run_downwards(path: Path) -> None:
    own = path.parent.name
    above = {area for area in imported_areas(path) if FLOORS[area] > FLOORS[own]}
    assert not above, f"{path.relative_to(WSM)} ({own}, floor {FLOORS[own]}) imports from {above}"
