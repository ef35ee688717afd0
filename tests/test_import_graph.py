"""No import cycles inside dupru_basicsr, counting the imports inside functions too (they hide a cycle from Python
but not the coupling). Run as a script it prints the graph's cycles: `python tests/test_import_graph.py`."""
import ast
import os.path as osp
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / 'dupru_basicsr'


# Cycles of the modules that branch r2 is reorganising (compare / export); the lead empties this at the merge.
KNOWN_CYCLES = []

# Layers, lowest first: `errors` (the user-error types) imports nothing of the package; `utils` (what the commands
# share) may import `errors` but not `plugin` (everything that touches BasicSR), which builds on both.
FORBIDDEN_IMPORTS = [('dupru_basicsr.errors', 'dupru_basicsr'), ('dupru_basicsr.utils', 'dupru_basicsr.plugin')]


def module_name(path, package):
    parts = list(path.relative_to(package.parent).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph(package=PACKAGE):
    """{module: set of package modules it imports anywhere in its code} for every module of `package`.

    An import names one module (the deepest one it spells out); the parent packages Python runs first are not
    counted, or every module importing `dupru_basicsr.x` would close a cycle with `dupru_basicsr/__init__.py`."""
    modules = {module_name(p, package): p for p in sorted(package.rglob('*.py'))}
    graph = {}
    for name, path in modules.items():
        is_package = path.name == '__init__.py'
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    anchor = name.split('.')[:len(name.split('.')) - node.level + is_package]
                    base = '.'.join(anchor + ([base] if base else []))
                targets = [base] + [f'{base}.{a.name}' for a in node.names]
            else:
                continue
            for target in targets:
                # the deepest package module the import names (`from pkg import mod` imports pkg.mod)
                while target and target not in modules:
                    target = target.rpartition('.')[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycles(graph):
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def in_package(module, package):
    return module == package or module.startswith(package + '.')


def forbidden_imports(graph, rules=FORBIDDEN_IMPORTS):
    """[(importer, imported)] for every import that a (lower, higher) rule forbids."""
    return sorted((importer, imported) for importer, targets in graph.items() for imported in targets
                  for lower, higher in rules
                  if in_package(importer, lower) and in_package(imported, higher) and not in_package(imported, lower))


def test_finder_sees_function_level_imports_and_cycles(tmp_path):
    pkg = tmp_path / 'dupru_basicsr'
    (pkg / 'sub').mkdir(parents=True)
    (pkg / '__init__.py').write_text('')
    (pkg / 'sub' / '__init__.py').write_text('')
    (pkg / 'a.py').write_text('from dupru_basicsr.sub import b\n')
    (pkg / 'sub' / 'b.py').write_text('def f():\n    from ..a import x\n')
    (pkg / 'c.py').write_text('import dupru_basicsr.a\n')
    graph = import_graph(pkg)
    assert graph['dupru_basicsr.a'] == {'dupru_basicsr.sub', 'dupru_basicsr.sub.b'}
    assert graph['dupru_basicsr.sub.b'] == {'dupru_basicsr.a'}
    assert find_cycles(graph) == [['dupru_basicsr.a', 'dupru_basicsr.sub.b']]


def test_layer_rule_sees_an_import_inside_a_function(tmp_path):
    pkg = tmp_path / 'dupru_basicsr'
    for sub in ('utils', 'plugin'):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / '__init__.py').write_text('')
    (pkg / '__init__.py').write_text('')
    (pkg / 'errors.py').write_text('')
    (pkg / 'plugin' / 'lock.py').write_text('from dupru_basicsr.errors import E\nfrom dupru_basicsr.utils import cli\n')
    (pkg / 'utils' / 'cli.py').write_text('from dupru_basicsr.errors import E\n'
                                          'def f():\n    from ..plugin.lock import L\n')
    assert forbidden_imports(import_graph(pkg)) == [('dupru_basicsr.utils.cli', 'dupru_basicsr.plugin.lock')]


def test_utils_does_not_import_plugin_and_errors_imports_nothing_of_the_package():
    assert forbidden_imports(import_graph()) == []


def test_dupru_basicsr_has_no_import_cycle():
    assert [c for c in find_cycles(import_graph()) if c not in KNOWN_CYCLES] == []


if __name__ == '__main__':
    graph = import_graph(Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE)
    cycles = find_cycles(graph)
    print(f'{len(graph)} modules, {sum(map(len, graph.values()))} imports, {len(cycles)} cycle(s)')
    for cycle in cycles:
        print('  cycle: ' + ' <-> '.join(cycle))
    for importer, imported in forbidden_imports(graph):
        print(f'  forbidden: {importer} imports {imported}')
    print(osp.basename(__file__), 'done')
