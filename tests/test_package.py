"""The public surface and the layering rules of DEVELOPERS.md, checked on every module of the package."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import downsize

SRC = Path(downsize.__file__).parent

#: Data flows down this list; a module may import only from layers above its own (or from its own
#: package). Packages on one line share a layer and may not import each other unless listed in
#: ``SAME_LAYER_OK``. Every top-level module or package of ``downsize`` must be placed here.
LAYERS: list[set[str]] = [
    {"_version", "errors"},
    {"store"},
    {"tasks"},
    {"config"},
    {"teacher"},
    {"data"},
    {"students"},
    {"calibration", "monitor"},
    {"training", "discover", "lifecycle"},
    {"cascade"},
    {"audit"},
    {"review"},
    {"report"},
    {"project", "evaluation"},
    {"server", "replay", "demo", "cli", "_uvicorn"},
]
SAME_LAYER_OK = {("evaluation", "project"), ("lifecycle", "training"), ("demo", "replay"), ("server", "_uvicorn"), ("replay", "_uvicorn"),
                 ("cli", "server"), ("cli", "replay"), ("cli", "demo")}


def test_all_is_exactly_the_public_names() -> None:
    public = {n for n in dir(downsize) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if type(getattr(downsize, n)).__name__ == "module"}
    assert set(downsize.__all__) == public - modules
    assert len(downsize.__all__) == len(set(downsize.__all__))


def _modules() -> dict[str, Path]:
    """Every module of the package: dotted name → file (``pkg.__init__`` is named ``pkg``)."""
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported downsize module, line) for every import in the file: top level or inside functions,
    ``import downsize.x``, ``from .x import y``, ``from . import x`` and ``from ..x.y import z``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "downsize" or a.name.startswith("downsize."):
                    yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "downsize" or node.module.startswith("downsize.")):
                target = node.module
            else:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                yield (sub if sub in MODULES else target), node.lineno


def _layer(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if "." in module else ""
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return top, i
    return top, -1


def test_every_module_has_a_layer() -> None:
    unplaced = sorted({_layer(m)[0] for m in MODULES if m != "downsize" and _layer(m)[1] < 0})
    assert not unplaced, f"place these in LAYERS (tests/test_package.py) and DEVELOPERS.md: {unplaced}"


def test_no_module_reaches_back_up_the_chain() -> None:
    bad = []
    for name, path in MODULES.items():
        if name == "downsize":
            continue
        src_top, src_layer = _layer(name)
        for target, line in _imports(name, path):
            if target == "downsize":
                bad.append(f"{name}:{line} imports the package root (a cycle through downsize/__init__)")
                continue
            dst_top, dst_layer = _layer(target)
            if dst_top == src_top:
                continue
            if dst_layer > src_layer or (dst_layer == src_layer and (src_top, dst_top) not in SAME_LAYER_OK):
                bad.append(f"{name}:{line} imports {target}, which comes after it in the data flow")
    assert not bad, "\n".join(bad)


def test_the_import_graph_has_no_cycle() -> None:
    """Imports inside functions count too: a function-level import that only dodges a cycle fails here."""
    graph = {name: {t for t, _ in _imports(name, path) if t in MODULES and t != name}
             for name, path in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_the_layering_check_sees_every_import_form(tmp_path: Path) -> None:
    """The checker itself: each import form resolves to the module it names."""
    p = SRC / "report" / "render" / "html.py"
    found = {t for t, _ in _imports("downsize.report.render.html", p)}
    assert "downsize.report.render.plots" in found  # from . import plots
    assert "downsize.report.advice" in found  # from ..advice import ...
    q = SRC / "students" / "artifacts.py"
    assert "downsize._version" in {t for t, _ in _imports("downsize.students.artifacts", q)}


def test_no_file_is_over_the_size_limit() -> None:
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450}
    assert not long, f"split these (one concept per file, ~400 lines): {long}"


def test_import_is_light_and_side_effect_free() -> None:
    code = ("import sys, downsize; heavy = [m for m in ('onnxruntime', 'tokenizers', 'matplotlib', 'pyarrow', "
            "'uvicorn', 'typer', 'fastapi') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
