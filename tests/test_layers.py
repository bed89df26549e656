"""The package's layers: what each module may import, read from the source (ast).

A module imports from its own layer or the layers below it, never above; the
job and the read side (explore) are side by side and do not import each other.
ARCHITECTURE.md names every module and draws the same layers.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "palette_dask"
ARCHITECTURE = PACKAGE.parent / "ARCHITECTURE.md"

# Lowest first. A module may import from the layers at or before its own.
LAYERS = {
    "base": {"errors", "_checks", "options", "storage"},
    "image": {
        "color",
        "names",
        "background",
        "_loops",
        "kmeans",
        "formats",
        "profiles",
        "tiffs",
        "imaging",
        "containers",
        "sources",
        "reads",
        "http_reads",
        "palette",
        "corpus",
    },
    "dataset": {"spec", "tables", "state", "dataset"},
    "job": {"cluster", "forked_workers", "plan", "tasks", "stops", "pipeline", "compact"},
    "explore": {
        "render",
        "index",
        "query",
        "_color_loops",
        "_transport",
        "serve",
        "stats",
        "report",
        "samples",
    },
    "cli": {"cli", "cli_options", "cli_dataset"},
}
ORDER = {"base": 0, "image": 1, "dataset": 2, "job": 3, "explore": 3, "cli": 4}
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}
# What reading a dataset must never load: the compute stack.
COMPUTE_STACK = ("numba", "sklearn", "skimage", "distributed")


def package_imports(path: Path) -> set[str]:
    """The package's modules ``path`` imports (relative imports), wherever in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
    return found & set(LAYER_OF)


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def test_every_module_has_a_layer_and_imports_nothing_above_it():
    assert {p.stem for p in modules()} == set(LAYER_OF)
    upward = []
    for path in modules():
        layer = LAYER_OF[path.stem]
        for imported in package_imports(path):
            other = LAYER_OF[imported]
            if ORDER[other] > ORDER[layer] or {layer, other} == {"job", "explore"}:
                upward.append(f"{path.stem} ({layer}) imports {imported} ({other})")
    assert not upward, "\n".join(upward)


def test_architecture_names_every_module_in_its_layer():
    text = ARCHITECTURE.read_text()
    for path in modules():
        assert f"`palette_dask/{path.name}`" in text, f"ARCHITECTURE.md does not name {path.name}"
    for layer, members in LAYERS.items():
        line = next((li for li in text.splitlines() if li.startswith(f"| {layer} |")), None)
        assert line is not None, f"ARCHITECTURE.md has no row for the {layer} layer"
        assert {m for m in members if f"`{m}`" in line} == members, line


def loaded_by(module: str) -> list[str]:
    """The modules a fresh Python process holds after importing ``module``."""
    return subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


@pytest.mark.parametrize(
    "module",
    ["palette_dask.dataset", "palette_dask.index", "palette_dask.query", "palette_dask.cli"],
)
def test_reading_a_dataset_does_not_load_the_compute_stack(module):
    loaded = loaded_by(module)
    assert module in loaded
    assert not [m for m in loaded if m.split(".")[0] in COMPUTE_STACK]


@pytest.mark.parametrize("module", ["palette_dask.tasks", "palette_dask.pipeline"])
def test_a_job_loads_only_the_engines_it_uses(module):
    """Every worker imports the tasks, and every client of a job the pipeline:
    scikit-learn and dask.array (with SciPy and pydata/sparse), needed only by
    the other engines and the corpus fit, scikit-image and SciPy, needed only
    for images with alpha and CIELAB, and aiohttp, needed only for HTTP reads,
    are left until they are used."""
    loaded = loaded_by(module)
    assert module in loaded and "numba" in loaded
    later = (
        "sklearn",
        "dask.array",
        "skimage",
        "scipy.ndimage",
        "aiohttp",
        "palette_dask.http_reads",
    )
    assert not [m for m in loaded if m.startswith(later)]
