"""The package's ownership rules and self-containment, checked on the source itself."""

import ast
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "srgan_jax"


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement in `path` (relative imports resolved are not used here)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_networks_import_nothing_else_of_the_package():
    for path in (PACKAGE / "networks").glob("*.py"):
        outside = {name for name in imported_modules(path)
                   if name.startswith("srgan_jax") and not name.startswith("srgan_jax.networks")}
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_networks_never_ask_for_the_backend():
    for path in (PACKAGE / "networks").glob("*.py"):
        text = path.read_text()
        assert "default_backend" not in text and "xla_cpu" not in text.replace("`srgan_jax.models`", ""), path.name


def test_only_xla_cpu_passes_compiler_options():
    for path in PACKAGE.rglob("*.py"):
        if path.name != "xla_cpu.py":
            assert "compiler_options=" not in path.read_text(), f"{path.relative_to(ROOT)} compiles with options"


def test_only_the_checkpoint_module_reads_checkpoint_metadata():
    for path in PACKAGE.rglob("*.py"):
        if path.name != "checkpoints.py":
            assert '"meta"' not in path.read_text(), f"{path.relative_to(ROOT)} touches checkpoint metadata"


def test_no_runtime_default_points_outside_the_package():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "../shared" not in text and "shared/data" not in text, f"{path.relative_to(ROOT)} names ../shared"


def test_setup_cfg_ships_every_subpackage_and_maps_configs_and_pretrained():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    listed = set(setup["options"]["packages"].split())
    found = {".".join(p.relative_to(ROOT).parent.parts) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"not in setup.cfg packages: {sorted(found - listed)}"
    mapping = dict(line.split(" = ") for line in setup["options"]["package_dir"].strip().splitlines())
    assert mapping == {"srgan_jax.configs": "configs", "srgan_jax.pretrained": "pretrained"}
    assert {"srgan_jax.configs", "srgan_jax.pretrained"} <= listed
    data = [pattern.strip() for pattern in setup["options.package_data"]["srgan_jax.pretrained"].split(",")]
    generators = [p.name for p in (ROOT / "pretrained").iterdir() if (p / "generator").is_dir()]
    assert len(generators) >= 2
    for name in generators:  # a generator left out of the wheel would load in a checkout only
        assert {f"{name}/*", f"{name}/**/*"} <= set(data), f"pretrained/{name} is not in setup.cfg package_data"


def _calls_named(path: Path, name: str) -> list[int]:
    """Line numbers of calls to `name(...)` or `<anything>.name(...)` in `path`."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Name) and func.id == name) or (isinstance(func, ast.Attribute) and func.attr == name):
                lines.append(node.lineno)
    return lines


def _package_sources() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if not p.relative_to(PACKAGE).parts[0] in ("configs", "pretrained")]


def test_only_the_parallel_strategy_builds_a_mesh():
    for path in _package_sources():
        if path.name != "parallel.py":
            calls = [n for n in ("Mesh", "make_mesh", "AbstractMesh") if _calls_named(path, n)]
            assert not calls, f"{path.relative_to(ROOT)} builds a mesh ({calls}): ask the strategy"


def test_only_the_command_line_knows_argparse_and_absl():
    for path in _package_sources():
        if path.name != "cli.py":
            flags = {name for name in imported_modules(path) if name.split(".")[0] in ("argparse", "absl")}
            assert not flags, f"{path.relative_to(ROOT)} imports {sorted(flags)}: take typed arguments"


def test_functions_stay_short_and_the_loop_reads_in_one_sitting():
    long = []
    for path in _package_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, f"functions over 60 lines: {long}"
    assert len((PACKAGE / "training" / "loop.py").read_text().splitlines()) < 200
