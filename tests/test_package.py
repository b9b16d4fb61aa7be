"""The public surface and the layering rules of DEVELOPERS.md."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import downsize

SRC = Path(downsize.__file__).parent

#: data flows left to right; a module may import only modules to its left (or errors/store/_private helpers)
CHAIN = ["config", "teacher", "data", "students", "calibration", "training", "cascade", "audit", "report"]


def test_all_is_exactly_the_public_names() -> None:
    public = {n for n in dir(downsize) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if type(getattr(downsize, n)).__name__ == "module"}
    assert set(downsize.__all__) == public - modules
    assert len(downsize.__all__) == len(set(downsize.__all__))


def _imports(module: str) -> set[str]:
    tree = ast.parse((SRC / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_no_module_reaches_back_up_the_chain() -> None:
    for i, mod in enumerate(CHAIN):
        later = set(CHAIN[i + 1 :]) | {"server", "cli", "project", "demo", "evaluation"}
        bad = _imports(mod) & later
        assert not bad, f"{mod} imports {bad}, which come after it in the data flow"


def test_import_is_light_and_side_effect_free() -> None:
    code = ("import sys, downsize; heavy = [m for m in ('onnxruntime', 'tokenizers', 'matplotlib', 'pyarrow', "
            "'uvicorn', 'typer', 'fastapi') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
