"""The package's layout is its architecture: one subpackage per pipeline stage, imports
flowing one way (a stage imports only earlier stages and the shared foundation), no import
cycles, and other stages reach a stage only through its face (its __init__), never its
private modules. Checked on the source, so a violation fails here rather than in review."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "pytest_sideeye"

# Earlier first. The foundation (errors, then settings, then files, memo, bugs and install)
# imports nothing of ours but itself; the model (snapshot) imports nothing of ours at all.
FOUNDATION = ("errors", "settings", "files", "memo", "bugs", "install")
STAGES = ("snapshot", "binary", "capture", "engine", "report", "services", "agent", "plugin",
          "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """Every pytest_sideeye module this file imports, top-level or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("pytest_sideeye")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if not mod.startswith("pytest_sideeye"):
                continue
            # `from pkg import mod` names a module when mod is a file or folder there.
            for a in node.names:
                sub = f"{mod}.{a.name}"
                target = PKG.parent / sub.replace(".", "/")
                found.append((sub if target.with_suffix(".py").exists() or target.is_dir()
                              else mod, node.lineno))
    return found


def stage_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def rank(stage: str) -> int:
    if stage in FOUNDATION:
        return FOUNDATION.index(stage) - len(FOUNDATION)
    return STAGES.index(stage)


def face(stage: str) -> set[str]:
    """What a stage's __init__ exports (its __all__)."""
    tree = ast.parse((PKG / stage / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__"
                                                for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


SOURCES = sorted(PKG.rglob("*.py"))


def test_every_module_belongs_to_a_stage():
    stray = [module_name(p) for p in SOURCES
             if stage_of(module_name(p)) not in (*FOUNDATION, *STAGES, "__init__")]
    assert not stray, f"modules outside the stage folders: {stray}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_flow_one_way(path):
    me = module_name(path)
    mine = stage_of(me)
    if mine == "__init__":
        return  # the package face may re-export from anywhere, lazily
    wrong = []
    for target, line in imports_of(path):
        theirs = stage_of(target)
        if theirs == mine:
            continue
        if mine == "snapshot":
            wrong.append(f"line {line}: the model imports {target}")
        elif theirs == "__init__" or rank(theirs) >= rank(mine):
            wrong.append(f"line {line}: {mine} (stage {rank(mine)}) imports later {target}")
        elif theirs not in FOUNDATION and target != f"pytest_sideeye.{theirs}" \
                and target.split(".")[2] not in face(theirs):
            wrong.append(f"line {line}: {target} is private to {theirs}; import its face "
                         f"(pytest_sideeye.{theirs})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for p in SOURCES:
        graph[module_name(p)] = {t for t, _ in imports_of(p)}
    # A package's face importing its own modules is not a cycle with them.
    for me, deps in graph.items():
        graph[me] = {d for d in deps if d in graph and not (d == me.rpartition(".")[0])}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (cyc := visit(d)):
                return cyc
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_importing_the_package_stays_light():
    """`import pytest_sideeye` (or its model) must not pull in Docker or pytest."""
    import subprocess
    import sys
    code = ("import sys, pytest_sideeye, pytest_sideeye.snapshot, pytest_sideeye.binary;"
            "print(sorted(m for m in ('docker', 'pytest', 'jinja2', 'bcc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_ruff_finds_nothing():
    """Dead code and unused imports stay out; imports stay sorted; booleans are passed by
    name (pyproject.toml's [tool.ruff] says which rules)."""
    import shutil
    import subprocess
    import sys

    from support import missing
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        missing("ruff is not installed (pip install -e '.[test]')")
    root = PKG.parent
    r = subprocess.run([ruff, "check", "--quiet", "--output-format", "concise",
                        "pytest_sideeye", "tests", "benchmarks", "examples"],
                       cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
