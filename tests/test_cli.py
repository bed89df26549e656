"""The command line, driven as a user types it."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from imagegen import encode
from jobtools import cli, invoke, read_table

from palette_dask import __version__
from palette_dask.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_has_help_with_an_example_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0
    assert main.commands
    for name, command in main.commands.items():
        result = runner.invoke(main, [name, "-h"])
        assert result.exit_code == 0, name
        assert "Example" in result.output, name
        for option in command.params:
            if option.param_type_name == "option" and option.name not in ("help",):
                assert option.help, f"{name} {option.name} has no help text"
        assert f"palette-dask {name}" in readme, f"README does not show `palette-dask {name}`"


def test_run_takes_the_files_a_shell_glob_expands_to(sample_dir, tmp_path, client1):
    """`palette-dask run photos/*.jpg -o out`: every path is an input, a .toml among
    them is the job spec, whatever their order or -i before the first."""
    photos = sorted(str(p) for p in sample_dir.glob("*.jpg"))
    spec = tmp_path / "job.toml"
    spec.write_text(f'input = ["{sample_dir}"]\nk = 3\npartition_size = 2\n')
    runner = CliRunner()
    on_cluster = ["--scheduler", client1.scheduler.address, "--no-progress"]
    for out, arguments in [
        (tmp_path / "plain", [*photos]),
        (tmp_path / "with-spec", ["-i", photos[0], *photos[1:3], str(spec), *photos[3:]]),
    ]:
        result = runner.invoke(main, ["run", *arguments, "-o", str(out), *on_cluster])
        assert result.exit_code == 0, result.output
        images = read_table(out, "images").to_pandas()
        assert sorted(images["uri"]) == photos
        assert set(images["k"]) == ({3} if "with-spec" in str(out) else {5})
    two_specs = runner.invoke(main, ["run", str(spec), str(spec), *photos, "-o", str(out)])
    assert two_specs.exit_code == 2 and "one job spec at most, got 2" in two_specs.output
    missing = runner.invoke(main, ["run", str(tmp_path / "absent.toml"), "-o", str(out)])
    assert missing.exit_code == 2 and "absent.toml" in missing.output


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_run_spec_with_overrides_end_to_end(sample_dir, tmp_path):
    notes = tmp_path / "notes"  # a folder of no image: its file is counted, not read
    notes.mkdir()
    (notes / "notes.txt").write_text("taken on a Tuesday\n")
    spec = tmp_path / "job.toml"
    spec.write_text(
        f'input = ["{sample_dir}", "{notes}"]\noutput = "{tmp_path / "ignored"}"\nk = 3\n'
    )
    out = tmp_path / "out"
    result = cli(
        "run",
        spec,
        "--output",
        out,
        "-k",
        4,
        "--color-space",
        "oklab",
        "--workers",
        1,
        "--partition-size",
        3,
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    n = len(list(sample_dir.iterdir()))
    assert f"{n} images ({n} ok, 0 failed)" in result.stdout
    assert "skipped 1 file that is not an image: .txt 1" in result.stdout
    assert "starting an embedded Dask cluster with 1 worker process(es)" in result.stderr
    assert "Dask dashboard: http" in result.stderr
    images = read_table(out, "images").to_pandas()
    assert (images["k"] == 4).all() and (images["color_space"] == "oklab").all()
    assert not (tmp_path / "ignored").exists()
    record = json.loads((out / "_job.json").read_text())
    assert record["spec"]["workers"] == 1
    assert record["counts"]["not_images"] == {".txt": 1}

    listing = invoke("palettes", out)
    assert listing.returncode == 0
    lines = listing.stdout.strip().splitlines()
    assert len(lines) == n
    assert all(len(re.findall(r"#[0-9a-f]{6}", line)) == 4 for line in lines)


def test_dry_run_counts_the_files_that_are_not_images(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "red.png").write_bytes(encode(np.full((4, 4, 3), (200, 0, 0), np.uint8), "PNG"))
    (folder / "notes.txt").write_text("taken on a Tuesday\n")
    (folder / "todo.txt").write_text("sort them\n")
    result = CliRunner().invoke(
        main, ["run", "-i", str(folder), "-o", str(tmp_path / "out"), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "inputs: 1 listed, 1 distinct" in result.output
    assert "skipped 2 files that are not images: .txt 2" in result.output
    assert not (tmp_path / "out").exists()


def test_palettes_lists_either_kind(sample_dir, tmp_path, client2):
    from palette_dask import JobSpec, run_job

    out = tmp_path / "out"
    run_job(
        JobSpec(input=[str(sample_dir)], output=str(out), mode="both", corpus_k=7), client=client2
    )
    n = len(list(sample_dir.iterdir()))
    own = CliRunner().invoke(main, ["palettes", str(out)]).output.strip().splitlines()
    shared = CliRunner().invoke(main, ["palettes", str(out), "--kind", "corpus"]).output
    assert len(own) == n
    assert all(len(re.findall(r"#[0-9a-f]{6}", line)) == 5 for line in own)
    corpus_colors = set(read_table(out, "corpus_palette").column("hex").to_pylist())
    assert len(shared.strip().splitlines()) == n
    assert set(re.findall(r"#[0-9a-f]{6}", shared)) <= corpus_colors
    assert len(re.findall(r"#[0-9a-f]{6}", shared)) >= n  # at least one corpus colour each


@pytest.mark.parametrize("path", sorted((ROOT / "jobs").glob("*.toml")), ids=lambda p: p.name)
def test_every_job_spec_is_valid(path):
    from palette_dask import JobSpec

    spec = JobSpec.from_toml(path)
    assert spec.input and spec.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-k", "0"], "`k` must be between 1 and 254, got 0"),
        (["--partition-size", "0"], "`partition_size` must be at least 1, got 0"),
        (["-i", "/no/such/folder"], "input '/no/such/folder' does not exist"),
    ],
)
def test_bad_arguments_fail_cleanly(args, message, tmp_path, sample_dir):
    base = ["run", "-i", str(sample_dir), "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_run_without_input_explains_what_is_missing(tmp_path):
    result = CliRunner().invoke(main, ["run", "-o", str(tmp_path)])
    assert result.exit_code == 1 and "needs input" in result.output


@pytest.mark.parametrize(
    ("filename", "content", "command", "message"),
    [
        (
            "job.toml",
            'input = ["x"]\noutput = "y"\ncolour_space = "lab"\n',
            "run",
            "unknown key(s) colour_space",
        ),
        ("job.toml", "input = [unclosed\n", "run", "is not valid TOML"),
        ("bad.jpg", "not an image", "show", "a text file, not an image"),
    ],
)
def test_bad_file_argument_fails_cleanly(filename, content, command, message, tmp_path):
    path = tmp_path / filename
    path.write_text(content)
    result = CliRunner().invoke(main, [command, str(path)])
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output


def test_show_prints_the_palette(sample_dir):
    result = invoke("show", sample_dir / "coffee.jpg", "-k", 5)
    assert result.returncode == 0, result.stderr
    shares = [float(s) for s in re.findall(r"(\d+\.\d)%", result.stdout)]
    assert len(re.findall(r"#[0-9a-f]{6}", result.stdout)) == 5
    assert sum(shares) == pytest.approx(100, abs=0.3) and shares == sorted(shares, reverse=True)


def test_show_json_matches_the_library(sample_dir):
    from palette_dask import extract_palette

    result = CliRunner().invoke(
        main, ["show", str(sample_dir / "rocket.jpg"), "--json", "--color-space", "lab", "-k", "6"]
    )
    assert result.exit_code == 0
    shown = json.loads(result.output)
    expected = extract_palette(str(sample_dir / "rocket.jpg"), color_space="lab", k=6)
    assert [c["hex"] for c in shown["colors"]] == expected.hex


def test_samples_writes_the_photographs(tmp_path, sample_dir):
    result = CliRunner().invoke(main, ["samples", str(tmp_path / "s")])
    assert result.exit_code == 0
    written = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert written == sorted(p.name for p in sample_dir.iterdir())
    assert "9 sample images in" in result.output
