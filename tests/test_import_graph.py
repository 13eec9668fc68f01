"""No import cycle among comit's modules, counting imports inside functions (a lazy import hides a
cycle, it does not remove it). Imports under ``if TYPE_CHECKING:`` are for type checkers only."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "comit"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The comit modules ``path`` imports, anywhere in it (functions included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(base: str) -> None:
        # `from .x import y` may name a module x.y or an attribute y of x: keep whichever is a module.
        while base and base not in modules:
            base = base.rpartition(".")[0]
        if base:
            found.add(base)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for grandchild in child.orelse:
                    visit(grandchild)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    resolve(alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([child.module] if child.module else []))
                else:
                    base = child.module or ""
                if base.startswith("comit"):
                    for alias in child.names:
                        resolve(f"{base}.{alias.name}")
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            # A package's __init__ importing its own submodules is not a cycle of concepts.
            if target.startswith(node + "."):
                continue
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = walk(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = walk(node)
            if cycle:
                return cycle
    return None


def test_the_graph_is_read_from_the_sources():
    graph = import_graph()
    assert "comit.model.checkpoints" in graph["comit.model.comit"]
    assert "comit.train.loop" in graph["comit.train.cli"]  # an import inside a function counts


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


# ---------------------------------------------------------------------- the command line's layering
SHARED = {"comit.cli", "comit.cli.app", "comit.cli.options", "comit.cli.support", "comit.cli.__main__"}


def test_command_groups_import_none_of_each_other():
    graph = import_graph()
    groups = {name for name in graph if name.startswith("comit.cli.")} - SHARED
    assert {"comit.cli.tokens", "comit.cli.eval", "comit.cli.viz", "comit.cli.train"} <= groups
    for group in sorted(groups):
        assert not graph[group] & (groups | {"comit.cli", "comit.cli.app"}), group


def test_the_library_never_imports_the_command_line():
    """Data flows one way, library -> command line; only entry points (``__main__``) start the app."""
    for name, targets in sorted(import_graph().items()):
        if name == "comit.cli" or name.startswith("comit.cli.") or name.endswith(".__main__"):
            continue
        assert not {t for t in targets if t == "comit.cli" or t.startswith("comit.cli.")}, name
