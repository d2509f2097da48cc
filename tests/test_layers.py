"""The package's layers, read from its imports (ast, every import statement, lazy ones inside functions included),
and the size of its modules.

A package imports only from the layers below it (docs/architecture.md): no package cycle, and no import upwards.
No module of the shipped code, its tooling, its benchmarks or its tests is over 400 lines: one that grows past it is
split along its seams.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "device_provisioning"
# Where the size rule holds: a long test file is as hard to read and to own as a long module (issue 23).
SIZE_CHECKED = ("device_provisioning", "stacks", "devtools", "lambdas", "bench", "tests")
MAX_MODULE_LINES = 400

# Lowest first; a package may import from its own layer's other members only where listed together and acyclic.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "files", "contract", "interrupts", "data", "__init__"}),
    frozenset({"identity"}),
    frozenset({"device", "signing", "rotation"}),
    frozenset({"doctor", "flashing"}),
    frozenset({"fleet"}),
    frozenset({"aws"}),
    frozenset({"factory", "rollout"}),
    frozenset({"cli", "__main__"}),
)


def unit_of(module: str) -> str | None:
    """``device_provisioning.aws.ota`` -> ``aws``; a top-level module is its own unit."""
    parts = module.split(".")
    if parts[0] != "device_provisioning":
        return None
    if len(parts) == 1 or not ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").exists()):
        return "__init__"  # the package itself, or a name it defines (__version__)
    return parts[1]


def imports(path: Path) -> Iterator[str]:
    """Every module (or module.name) ``path`` imports from this package."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "device_provisioning":  # from device_provisioning import aws, signing
                yield from (f"device_provisioning.{alias.name}" for alias in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the package imports absolutely")


def package_graph() -> dict[str, dict[str, set[str]]]:
    """unit -> unit it imports -> the files that do."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        source = unit_of(".".join(relative.parts))
        assert source is not None
        for module in imports(path):
            target = unit_of(module)
            if target is not None and target != source:
                graph.setdefault(source, {}).setdefault(target, set()).add(str(path.relative_to(PACKAGE)))
    return graph


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        for target in graph.get(unit, {}):
            if target not in index:
                visit(target)
                low[unit] = min(low[unit], low[target])
            elif target in stack:
                low[unit] = min(low[unit], index[target])
        if low[unit] == index[unit]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == unit:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return found


def layer_of(unit: str) -> int:
    for number, members in enumerate(LAYERS):
        if unit in members:
            return number
    raise AssertionError(f"device_provisioning/{unit} is in no layer: add it to LAYERS and docs/architecture.md")


def test_no_package_imports_in_a_cycle() -> None:
    graph = package_graph()
    explained = []
    for component in cycles(graph):
        edges = [f"{a}->{b} in {', '.join(sorted(graph[a][b]))}" for a in component for b in graph.get(a, {})]
        explained.append(
            f"{' <-> '.join(component)}: {'; '.join(e for e in edges if e.split('->')[1].split()[0] in component)}"
        )
    assert not explained, explained


def test_every_import_goes_down_the_layers() -> None:
    upward = [
        f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)}) in {', '.join(sorted(files))}"
        for source, targets in package_graph().items()
        for target, files in targets.items()
        if layer_of(target) > layer_of(source)
    ]
    assert not upward, upward


def test_every_unit_of_the_package_has_a_layer() -> None:
    for path in PACKAGE.iterdir():
        if path.suffix == ".py":
            layer_of(path.stem)
        elif (path / "__init__.py").exists():
            layer_of(path.name)


def test_the_checks_see_a_cycle_and_an_upward_import() -> None:
    # The checks themselves, on a made-up graph: a test that cannot fail would prove nothing.
    assert cycles({"a": {"b": {"x"}}, "b": {"c": {"y"}}, "c": {"a": {"z"}}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b": {"x"}}, "b": {}}) == []
    assert layer_of("cli") > layer_of("aws") > layer_of("fleet") > layer_of("device") > layer_of("errors")


def oversized_modules(root: Path, folders: tuple[str, ...], limit: int) -> list[str]:
    """Each module under ``folders`` longer than ``limit`` lines, named with its length."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            lines = len(path.read_text().splitlines())
            if lines > limit:
                found.append(f"{path.relative_to(root)}: {lines} lines")
    return found


def test_no_module_is_over_400_lines() -> None:
    too_long = oversized_modules(ROOT, SIZE_CHECKED, MAX_MODULE_LINES)
    assert not too_long, f"over {MAX_MODULE_LINES} lines, split along their seams: {'; '.join(too_long)}"


def test_the_size_check_names_a_long_module_and_its_length(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "long.py").write_text("x = 1\n" * 401)
    (tmp_path / "pkg" / "exact.py").write_text("x = 1\n" * 400)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "long.py").write_text("x = 1\n" * 500)  # not a checked folder
    assert oversized_modules(tmp_path, ("pkg",), 400) == [f"{Path('pkg', 'sub', 'long.py')}: 401 lines"]
