"""The package's import graph has no cycles (DESIGN.md section 2).

Every ``import`` in every module of ``vaequery/`` is read with :mod:`ast`,
function-level imports included (a late import hides a cycle from Python, not
from a reader). ``from pkg import name`` is an edge to the submodule
``pkg.name`` when there is one, else to ``pkg`` itself; importing a submodule
does not count as importing its parent package's ``__init__``.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vaequery"

#: Back-references still to be removed, each ``(importer, imported): why``. The
#: test fails on any other cycle, and on an entry here that no longer exists
#: (delete it then), so this list can only shrink.
DEFERRED: dict = {
    # Deferred (function-level) imports that would close a cycle, with why. Empty: the
    # result objects save and pickle through vaequery._format, below vaequery.io.
}


def _modules():
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def import_graph():
    """``{module: set of vaequery modules it imports}`` from the source, every scope."""
    mods = _modules()
    graph = {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module
                for a in node.names:
                    if f"{module}.{a.name}" in mods:
                        deps.add(f"{module}.{a.name}")
                    elif module in mods:
                        deps.add(module)
        deps.discard(name)
        graph[name] = deps
    return graph


def find_cycle(graph):
    """One cycle as a list of modules (first repeated at the end), or ``None``."""
    state = {}  # 1: on the current path, 2: done

    def visit(v, path):
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w) :] + [w]
            if w not in state:
                found = visit(w, path)
                if found:
                    return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v, [])
            if found:
                return found
    return None


def test_the_checker_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    graph = import_graph()
    # function-level imports count: fit's Posterior import is inside run()
    assert "vaequery.posterior" in graph["vaequery.fit"]
    assert "vaequery.backends._base" in graph["vaequery.fit"]


def test_no_import_cycles():
    graph = import_graph()
    stale = [edge for edge in DEFERRED if edge[1] not in graph.get(edge[0], ())]
    assert not stale, f"these imports are gone: delete them from DEFERRED: {stale}"
    for a, b in DEFERRED:
        graph[a] = graph[a] - {b}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_reporting_layer_sits_between_backends_and_results():
    graph = import_graph()
    assert any(n.startswith("vaequery.report.") for n in graph)
    for name, deps in graph.items():
        if name.startswith("vaequery.report"):
            # it reads results passed to it; the result object and compare import it
            assert not deps & {"vaequery.posterior", "vaequery.compare", "vaequery.cli"}, name
        if name.startswith("vaequery.backends"):
            assert not any(d.startswith("vaequery.report") for d in deps), name
