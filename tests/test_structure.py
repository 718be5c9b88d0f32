"""The package's import graph has no cycles: every import statement (module level or inside a
function) of python/fastfool, resolved to the module it names, read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "python" / "fastfool"


def _modules():
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    for ext in ("_core", "_cuda"):  # the compiled modules: leaves of the graph
        out[f"fastfool.{ext}"] = (None, False)
    return out


def import_graph():
    mods = _modules()
    graph = {m: set() for m in mods}
    for name, (path, is_pkg) in mods.items():
        if path is None:
            continue
        here = name if is_pkg else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                for a in node.names:  # `from pkg import sub` names a module when sub is one
                    targets.append(f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod)
            for t in targets:
                if t in mods and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph):
    seen, stack, found = set(), [], []

    def visit(n, on_path):
        if n in on_path:
            found.append(stack[stack.index(n):] + [n])
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        on_path.add(n)
        for m in sorted(graph[n]):
            visit(m, on_path)
        on_path.discard(n)
        stack.pop()

    for n in sorted(graph):
        visit(n, set())
    return found


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert "fastfool.attacks.gradient" in graph and graph["fastfool.attacks.gradient"]
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def _stub_names(path):
    return {n.name for n in ast.parse(path.read_text()).body
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")}


def _bound_and_stubbed(fn, stub_def):
    """Parameter names from pybind11's signature line and from the stub (self dropped)."""
    import re
    sig = fn.__doc__.split("\n")[0]
    bound = [b for b in re.findall(r"(\w+): ", sig[sig.index("("):]) if b != "self"]
    a = stub_def.args
    stubbed = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg != "self"]
    return bound, stubbed


def test_stubs_name_exactly_the_compiled_functions():
    """Each compiled module's .pyi lists every public function it has, and nothing else; the
    stub's parameter names are the binding's (read from pybind11's signature line)."""
    import importlib
    for mod in ("_core", "_cuda"):
        stub = PKG / f"{mod}.pyi"
        assert stub.exists(), stub
        try:
            m = importlib.import_module(f"fastfool.{mod}")
        except ImportError:
            continue  # _cuda: built without CUDA
        names = {n for n in dir(m) if not n.startswith("_") and callable(getattr(m, n))}
        assert _stub_names(stub) == names, (mod, _stub_names(stub) ^ names)
        body = ast.parse(stub.read_text()).body
        tree = {n.name: n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        for name in names:
            obj, node = getattr(m, name), tree[name]
            if isinstance(node, ast.ClassDef):
                # a bound class: its public methods and properties, each with the binding's names
                public = {n for n in dir(obj) if not n.startswith("_")} | {"__init__"}
                methods = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
                assert set(methods) == public, (mod, name, set(methods) ^ public)
                for meth, d in methods.items():
                    attr = getattr(obj, meth)
                    if isinstance(attr, property):
                        assert any(isinstance(x, ast.Name) and x.id == "property"
                                   for x in d.decorator_list), (mod, name, meth)
                        continue
                    bound, stubbed = _bound_and_stubbed(attr, d)
                    assert bound == stubbed, (mod, name, meth, bound, stubbed)
                continue
            bound, stubbed = _bound_and_stubbed(obj, node)
            assert bound == stubbed, (mod, name, bound, stubbed)


def test_attacks_use_the_model_protocol_not_private_hooks():
    """Attack modules reach models through the documented protocol (models/base.py): scores,
    loss_grad, fused_step, vjp, layers, affine_map...; the only private names they may touch
    are the input checks and the verdict rule's hooks listed here."""
    allowed = {"_X", "_y", "_be", "_source_u", "_duplicates", "_affine_error"}
    bad = []
    for path in (PKG / "attacks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in ("model", "m", "ref") and node.attr.startswith("_")
                    and not node.attr.startswith("__") and node.attr not in allowed):
                bad.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    assert not bad, bad


def test_model_hierarchy():
    """KernelSVM is a Model but not a stack of layers (no fake weights); the dense models are."""
    import numpy as np

    import fastfool as ff
    from fastfool.models import DenseModel
    svm = ff.KernelSVM(np.eye(3), np.array([1.0, -1.0, 0.5]), 0.1, kernel="rbf")
    assert isinstance(svm, ff.Model) and not isinstance(svm, DenseModel)
    assert not any(hasattr(svm, a) for a in ("_Ws", "_bs", "_acts", "hidden", "backproject"))
    for m in (ff.LinearModel(np.eye(3)), ff.MLP([np.ones((3, 4)), np.ones((4, 2))])):
        assert isinstance(m, DenseModel) and len(m.layers()[0]) == m.n_layers
    X = np.random.default_rng(0).uniform(0, 1, (5, 3))
    for m in (svm, ff.LinearModel(np.eye(3))):
        np.testing.assert_allclose(m.scores(X, "softmax"), m.predict_proba(X), rtol=1e-12)
