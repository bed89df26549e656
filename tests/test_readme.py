"""The README's Python examples run as written."""

import re
import runpy
import shutil
from pathlib import Path

import dask
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)), ids=lambda i: f"block{i}")
def test_python_example_runs(index, sample_dir, client2, tmp_path, monkeypatch, capsys):
    """Each example runs as a script: from a file, as ``__main__``, in a namespace of its
    own (so it imports all it uses), in a folder holding ``data/samples``. It finds the
    session's cluster in the ``scheduler-address`` setting, which a user's script gets
    from DASK_SCHEDULER_ADDRESS once a cluster is up (see "Running on a cluster"); the
    command-line tests run the embedded cluster in a process of its own."""
    shutil.copytree(sample_dir, tmp_path / "data" / "samples")
    script = tmp_path / "example.py"
    script.write_text(PYTHON_BLOCKS[index])
    monkeypatch.chdir(tmp_path)
    with dask.config.set({"scheduler-address": client2.scheduler.address}):
        runpy.run_path(str(script), run_name="__main__")
    assert re.search(r"#[0-9a-f]{6}", capsys.readouterr().out)


def test_readme_has_python_examples():
    assert PYTHON_BLOCKS
