"""The import layering: the base imports no stage, stages import no other stage, nothing loops;
and the command lines sit on top of the library.

    sts (base)  <-  corpus_builder, tokenizer_ext, train, infer (stages)  <-  recipes, benchmarks

Every import statement is read from the source (module level and inside functions alike), so a
lazy import counts as much as an eager one. Command-line modules are those named `cli` or `cli_*`
(`train.cli`, `sts.cli`, `sts.cli_help`) and the benchmark scripts: only they import a command-line
module, only they define `main` or run as `__main__`, and every installed script points at one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = "sts"
STAGES = ("corpus_builder", "tokenizer_ext", "train", "infer")
TOP = ("recipes", "benchmarks")
PACKAGES = (BASE, *STAGES, *TOP)


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def imported_names(name: str, path: Path) -> set[str]:
    """Every module name `path` imports (relative imports resolved); `from a import b` gives a.b too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def internal_edges() -> dict[str, set[str]]:
    """Module -> the project modules it imports (names that are not modules are dropped)."""
    return {
        name: {m for m in imported_names(name, path) if m in MODULES and m != name}
        for name, path in MODULES.items()
    }


def layer_violation(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported`, or None when it may."""
    src, dst = importer.split(".")[0], imported.split(".")[0]
    if src == dst or src in TOP:
        return None
    if dst in TOP:
        return f"{dst} sits above every stage: nothing imports it"
    if src == BASE:
        return "the base (sts) imports no stage"
    if dst != BASE:
        return f"a stage imports only itself and the base, not {dst}"
    return None


def test_the_scan_sees_the_packages():
    assert {"sts.vocab", "infer.translate", "train.trainer", "recipes.demo"} <= set(MODULES)
    assert "sts.vocab" in internal_edges()["infer.translate"]


def test_no_upward_or_sideways_import():
    problems = [
        f"{importer} imports {imported}: {why}"
        for importer, imported_set in internal_edges().items()
        for imported in sorted(imported_set)
        if (why := layer_violation(importer, imported))
    ]
    assert not problems, "\n".join(problems)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (the import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _edges_without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package `__init__` that re-exports its submodules lazily is not a cycle with them."""
    return {
        src: {dst for dst in dsts if not (src.startswith(dst + ".") and MODULES[dst].name == "__init__.py")}
        for src, dsts in graph.items()
    }


def test_no_import_cycles():
    cycles = strongly_connected(_edges_without_package_inits(internal_edges()))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("sts.tasks", "sts.vocab", True),
        ("infer.checkpoint_eval", "sts.metrics", True),
        ("recipes.demo", "train.trainer", True),
        ("sts.demo", "corpus_builder.build", False),
        ("infer.mt_eval", "corpus_builder.mt", False),
        ("train.data", "recipes.demo", False),
    ],
)
def test_the_rule_itself(importer, imported, allowed):
    assert (layer_violation(importer, imported) is None) == allowed


def is_cli_module(name: str) -> bool:
    """A command-line module: named `cli` / `cli_*`, or a benchmark script."""
    last = name.rsplit(".", 1)[-1]
    return last == "cli" or last.startswith("cli_") or name.split(".")[0] == "benchmarks"


def test_no_library_module_imports_a_command_line_module():
    problems = [
        f"{importer} imports {imported}: only command-line modules import one"
        for importer, imported_set in internal_edges().items()
        for imported in sorted(imported_set)
        if is_cli_module(imported) and not is_cli_module(importer)
    ]
    assert not problems, "\n".join(problems)


def _entry_points(path: Path) -> list[str]:
    """`def main` / `def X_main` at module level, and `if __name__ == "__main__"` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = [
        f"def {node.name}"
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and (node.name == "main" or node.name.endswith("_main"))
        and node.name != "cli_main"  # sts.errors.cli_main: the error policy every command runs under
    ]
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            found.append("if __name__ == '__main__'")
    return found


def test_mains_live_only_in_command_line_modules():
    problems = [
        f"{name}: {what}"
        for name, path in MODULES.items()
        if not is_cli_module(name)
        for what in _entry_points(path)
    ]
    assert not problems, "\n".join(problems)
    import tomllib  # Python >= 3.11, like tests/test_cli.py

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for script, target in scripts.items():
        module, _, function = target.partition(":")
        assert is_cli_module(module) and f"def {function}" in _entry_points(MODULES[module]), script


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [("infer.checkpoint_eval", "infer.cli", False), ("recipes.serve_service", "infer.cli", False),
     ("train.cli", "sts.cli", True), ("benchmarks.gpu_check", "sts.cli", True), ("sts.cli", "sts.cli_help", True)],
)  # fmt: skip
def test_the_command_line_rule_itself(importer, imported, allowed):
    assert (not is_cli_module(imported) or is_cli_module(importer)) == allowed


def test_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
