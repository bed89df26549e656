"""The job on clusters it does not start: real `dask scheduler` and `dask worker` processes,
a TLS-secured scheduler, workers of another version."""

import json
import os
from pathlib import Path

import pytest
from clusters import external_cluster
from jobtools import BAD_INPUTS, assert_same_dataset, cli, fresh_cluster, invoke, read_table

from palette_dask import JobSpec, run_job


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """A scheduler and two single-threaded workers on 127.0.0.1, torn down afterwards."""
    with external_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def embedded_run(corpus, client2, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded") / "out"
    run_job(JobSpec(input=[str(corpus)], output=str(out), partition_size=3), client=client2)
    return out


def test_job_by_scheduler_address_matches_embedded_run(external, corpus, embedded_run, tmp_path):
    address, _ = external
    out = tmp_path / "out"
    report = run_job(
        JobSpec(input=[str(corpus)], output=str(out), scheduler=address, partition_size=5)
    )
    assert report.errors == 4
    assert_same_dataset(out, embedded_run)


def test_job_by_scheduler_file_matches_embedded_run(
    external, corpus, embedded_run, tmp_path, monkeypatch
):
    """With a relative output path: the folder is the caller's, though the workers run
    in a working folder of their own."""
    _, scheduler_file = external
    monkeypatch.chdir(tmp_path)
    report = run_job(JobSpec(input=[str(corpus)], output="out", scheduler_file=str(scheduler_file)))
    assert report.output == "out"
    assert_same_dataset(tmp_path / "out", embedded_run)


def test_job_by_environment_variable_via_cli(external, corpus, embedded_run, tmp_path):
    address, _ = external
    out = tmp_path / "out"
    result = cli(
        "run",
        "-i",
        corpus,
        "-o",
        out,
        "--no-progress",
        env={**os.environ, "DASK_SCHEDULER_ADDRESS": address},
    )
    assert result.returncode == 0, result.stderr
    assert f"connecting to the Dask scheduler at {address}" in result.stderr
    assert_same_dataset(out, embedded_run)


def test_both_modes_on_the_external_cluster_match_a_local_cluster(
    external, corpus, client1, tmp_path
):
    address, _ = external
    spec = JobSpec(input=[str(corpus)], output=str(tmp_path / "embedded"), mode="both", corpus_k=8)
    run_job(spec, client=client1)
    external_out = tmp_path / "external"
    run_job(spec.replace(output=str(external_out), scheduler=address, partition_size=5))
    assert_same_dataset(external_out, tmp_path / "embedded")
    assert read_table(external_out, "corpus_palette").equals(
        read_table(tmp_path / "embedded", "corpus_palette")
    )


def test_dry_run_prints_the_plan_and_runs_nothing(external, corpus, tmp_path):
    address, _ = external
    out = tmp_path / "out"
    result = invoke("run", "-i", corpus, "-o", out, "--scheduler", address, "--dry-run")
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout[: result.stdout.index("\ninputs:")])
    assert spec["scheduler"] == address and spec["input"] == [str(corpus)]
    n_inputs = sum(1 for p in corpus.rglob("*") if p.is_file())
    assert f"inputs: {n_inputs} listed, {n_inputs} distinct" in result.stdout
    # Sized for one worker: the workers of a running cluster are counted when the job starts.
    size = n_inputs // 2
    assert f"partitions: {-(-n_inputs // size)} of up to {size} images, sized for 1 worker(s)" in (
        result.stdout
    )
    assert f"cluster: the Dask scheduler at {address} (job spec)" in result.stdout
    assert not out.exists()
    embedded = invoke("run", "-i", corpus, "-o", out, "--workers", "3", "--dry-run")
    assert "an embedded LocalCluster of 3 single-threaded worker process(es)" in embedded.stdout


def test_log_level_and_performance_report(external, corpus, tmp_path):
    address, _ = external
    out = tmp_path / "out"
    common = ["run", "-i", corpus, "-o", out, "--scheduler", address, "--no-progress"]
    logged = cli(*common, "--performance-report", "--log-level", "info")
    assert logged.returncode == 0, logged.stderr
    n_inputs = sum(1 for p in corpus.rglob("*") if p.is_file())
    sized = json.loads((out / "_job.json").read_text())["partitioning"]
    assert f"first pass: image mode, partitions of {sized['partition_size']} images" in (
        logged.stderr
    )
    assert f"first pass: {n_inputs} images ({len(BAD_INPUTS)} failed)" in logged.stderr
    report = (out / "performance_report.html").read_text()
    assert report.startswith("<!DOCTYPE html>") and "Dask Performance Report" in report
    quiet = cli(*common, "--overwrite", "--log-level", "warning")
    assert quiet.returncode == 0, quiet.stderr
    assert "first pass" not in quiet.stderr
    assert not (out / "performance_report.html").exists()  # --overwrite replaced it all


def _write_certificates(folder: Path):
    """A temporary certificate authority's files for the command line, and the
    :class:`~distributed.security.Security` of a cluster that trusts them."""
    from distributed.security import Security

    temporary = Security.temporary()
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    paths["ca"].write_text(temporary.tls_ca_file)
    paths["cert"].write_text(temporary.tls_client_cert)
    paths["key"].write_text(temporary.tls_client_key)
    return paths, temporary


def test_job_on_a_tls_secured_scheduler(tmp_path, sample_dir):
    certs, security = _write_certificates(tmp_path)
    tls = ["--tls-ca-file", certs["ca"], "--tls-cert", certs["cert"], "--tls-key", certs["key"]]
    with fresh_cluster(1, security=security) as client:
        address = client.scheduler.address
        assert address.startswith("tls://")
        out = tmp_path / "out"
        result = invoke(
            "run", "-i", sample_dir, "-o", out, "--scheduler", address, *tls, "--no-progress"
        )
        assert result.returncode == 0, result.stderr
        assert "9 images (9 ok, 0 failed)" in result.stdout
        plain = address.replace("tls://", "tcp://")
        refused = invoke("run", "-i", sample_dir, "-o", tmp_path / "x", "--scheduler", plain)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert f"cannot reach the Dask scheduler at {plain}" in refused.stderr
        assert not (tmp_path / "x").exists()


def test_workers_with_other_versions_are_refused(tmp_path, sample_dir):
    preload = tmp_path / "other_version.py"
    preload.write_text("import palette_dask\npalette_dask.__version__ = '0.0.0+other'\n")
    with fresh_cluster(1, **{"distributed.worker.preload": [str(preload)]}) as client:
        out = tmp_path / "out"
        result = invoke("run", "-i", sample_dir, "-o", out, "--scheduler", client.scheduler.address)
    assert result.returncode == 1
    assert "run other package versions than this client" in result.stderr
    assert "palette-dask 0.0.0+other, client has" in result.stderr
    assert "Traceback" not in result.stderr
