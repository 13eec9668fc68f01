"""No import cycle among comit's modules, counting imports inside functions (a lazy import hides a
cycle, it does not remove it) and imports under ``if TYPE_CHECKING:`` (a type-only import is still
one concept leaning on another); no folder imports a folder above it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "comit"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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
    assert "comit.train.loop" in graph["comit.train.launch"]  # an import inside a function counts
    assert "comit.eval.results" in graph["comit.cli.eval"]  # so does one for type checkers only


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


# ---------------------------------------------------------------------- the floors
# Each room (a folder, or a module at the top of the package) imports only rooms listed before it:
# the utility floor knows nothing of COMiT; data and the frozen teachers know nothing of the model;
# every metric is computed once, below the model that reports a poor fit with one and everything
# that measures; training, pictures, evaluation, experiments, benchmarks and the command line
# stack on top in that order.
FLOORS = (
    "comit.io", "comit.user_settings", "comit.devices", "comit.progress", "comit.plots",
    "comit.data", "comit.teachers", "comit.metrics", "comit.model", "comit.tokens_file", "comit.token_shards",
    "comit.train", "comit.viz", "comit.eval", "comit.experiments", "comit.bench", "comit.cli",
)
# Entry points start the command line from below it; the package root only gives ``__version__``
# (its public names load lazily, on first use).
ENTRY_POINTS = {"comit.__main__", "comit.train.__main__", "comit.cli.__main__"}
ROOT = "comit"


def room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def upward_imports(graph: dict[str, set[str]], floors: tuple[str, ...] = FLOORS) -> list[str]:
    found = []
    for name, targets in sorted(graph.items()):
        if name in ENTRY_POINTS or name == ROOT:
            continue
        for target in sorted(targets - {ROOT}):
            if room(target) != room(name) and floors.index(room(target)) > floors.index(room(name)):
                found.append(f"{name} -> {target}")
    return found


def test_every_room_has_a_floor():
    assert {room(name) for name in import_graph()} - {ROOT} - ENTRY_POINTS == set(FLOORS)


def test_no_room_imports_a_room_above_it():
    assert upward_imports(import_graph()) == []


def test_an_upward_import_is_found():
    graph = {"comit.model.comit": {"comit.eval.run_recon"}, "comit.eval.run_recon": {"comit.model.comit", ROOT}}
    assert upward_imports(graph) == ["comit.model.comit -> comit.eval.run_recon"]


def test_the_readme_lists_the_folders_in_their_order():
    """The README's Layout says each folder imports only those listed above it: its order is FLOORS'."""
    readme = (PACKAGE.parent.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout"):].split("```")[1]
    listed = [line.split()[0].rstrip(",/").removeprefix("src/").removesuffix(".py").replace("/", ".")
              for line in layout.splitlines() if line.startswith("src/comit/")]
    listed = [name for name in listed if name in FLOORS]
    assert listed == sorted(listed, key=FLOORS.index) and {"comit.io", "comit.metrics", "comit.cli"} <= set(listed)


def test_no_function_over_sixty_lines():
    """Short functions whose names say what they do (signature and docstring included)."""
    long = [f"{path.relative_to(PACKAGE)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted(PACKAGE.rglob("*.py")) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert long == []
