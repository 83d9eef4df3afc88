"""The house's shape, read from the code with ast: no import cycle among promptevo's modules
(imports inside functions counted), imports only from the same or a lower layer, and no module
of 500 lines or more."""

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "promptevo"

# bottom to top; a module may import from its own layer (no cycle) or any lower one
LAYERS = [
    {"errors", "hashing", "interrupts", "stats", "human", "devices", "render_models", "config", "model_cache", "images", "display"},
    {"registry", "embed"},
    {"storage"},
    {"renderers", "rewards", "llms"},
    {"evaluation"},
    {"retouch", "promptdb"},
    {"optimise"},
    {"reports", "web", "lab"},
    {"cli", "__main__", "__init__"},
]


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """promptevo modules `name` imports anywhere in its code (a package's face: its __init__)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    wing = parts[1] if len(parts) > 1 else "__init__"
    return next(i for i, names in enumerate(LAYERS) if wing in names)


def test_no_import_cycle_local_imports_counted():
    try:
        order = list(graphlib.TopologicalSorter(graph()).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert "promptevo.registry" in order


def test_every_wing_has_a_layer_and_imports_only_downwards():
    g = graph()
    upward = [(a, b) for a, deps in g.items() for b in deps if layer(b) > layer(a)]
    assert not upward, "imports from a lower layer to a higher one: " + ", ".join(f"{a} -> {b}" for a, b in upward)


def test_the_registry_imports_no_implementation():
    assert graph()["promptevo.registry"] <= {"promptevo.config", "promptevo.errors"}


def test_no_module_reaches_500_lines():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    assert max(sizes.values()) < 500, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_imports_inside_functions_and_relative_imports_are_read(tmp_path):
    """A cycle hidden in a function, or behind a relative import, would otherwise go unseen."""
    module = tmp_path / "x.py"
    module.write_text("def f():\n    from promptevo.cli.main import app\n    from .bandit import best\n", encoding="utf-8")
    assert imports("promptevo.optimise.x", module, set(modules()) | {"promptevo.optimise.x"}) == {
        "promptevo.cli.main", "promptevo.optimise.bandit"}
