"""The README's Python examples run as written."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)), ids=lambda i: f"block{i}")
def test_python_example_runs(index, sample_dir, client2, tmp_path):
    """Each example as a script of its own, which finds a running cluster in
    ``DASK_SCHEDULER_ADDRESS``, as a user's scripts do once one is up (see "Running on
    a cluster"); the command-line tests run the embedded cluster in a new process."""
    shutil.copytree(sample_dir, tmp_path / "data" / "samples")
    script = tmp_path / "example.py"
    script.write_text(PYTHON_BLOCKS[index])
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": client2.scheduler.address}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"#[0-9a-f]{6}", result.stdout)


def test_readme_has_python_examples():
    assert PYTHON_BLOCKS
