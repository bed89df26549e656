"""Job settings: read settings checked at the boundary, storage options parsed, merged, hidden."""

import pytest

from palette_dask import JobSpec
from palette_dask.spec import parse_storage_options


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"read_concurrency": 0}, ValueError, "`read_concurrency` must be at least 1, got 0"),
        ({"read_per_host": 0}, ValueError, "`read_per_host` must be at least 1, got 0"),
        ({"read_retries": -1}, ValueError, "`read_retries` must be at least 0, got -1"),
        ({"read_timeout": 0}, ValueError, "`read_timeout` must be more than 0 seconds, got 0"),
        ({"read_timeout": "30"}, TypeError, "`read_timeout` must be a number of seconds"),
        ({"read_buffer_bytes": 0}, ValueError, "`read_buffer_bytes` must be at least 1, got 0"),
        ({"storage_options": ["anon"]}, TypeError, "`storage_options` must be a table"),
    ],
)
def test_bad_read_settings_are_refused_with_their_name(changes, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        JobSpec(input=["x"], output="out", **changes)


def test_read_settings_reach_the_reads():
    spec = JobSpec(
        input=["x"],
        output="out",
        read_concurrency=7,
        read_per_host=3,
        read_timeout=2.5,
        read_retries=4,
        read_buffer_bytes=1000,
        max_file_bytes=5000,
        storage_options={"anon": True},
    )
    options = spec.read_options
    assert (options.concurrency, options.per_host, options.timeout) == (7, 3, 2.5)
    assert (options.retries, options.buffer_bytes, options.max_file_bytes) == (4, 1000, 5000)
    assert options.storage_options == {"anon": True}


def test_storage_options_from_flags_nest_and_read_json_values():
    parsed = parse_storage_options(
        ["s3.anon=false", "s3.client_kwargs.endpoint_url=http://127.0.0.1:9000", "retries=5"]
    )
    assert parsed == {
        "s3": {"anon": False, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}},
        "retries": 5,
    }
    with pytest.raises(ValueError, match="must look like KEY=VALUE, got 'anon'"):
        parse_storage_options(["anon"])


def test_flags_are_laid_over_the_spec_files_storage_options(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(
        'input = ["x"]\noutput = "out"\n'
        '[storage_options.client_kwargs]\nregion_name = "eu-west-1"\nendpoint_url = "http://a"\n'
    )
    spec = JobSpec.from_toml(
        path, storage_options={"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}
    )
    assert spec.storage_options == {
        "client_kwargs": {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:9000"}
    }


def test_secrets_never_reach_the_job_record():
    options = {
        "key": "AKIDEXAMPLE",
        "secret": "wJalrXUtnFEMI",
        "token": "FwoGZX",
        "s3": {"account_key": "abc", "client_kwargs": {"region_name": "eu-west-1"}},
    }
    spec = JobSpec(input=["x"], output="out", storage_options=options)
    recorded = spec.to_dict()["storage_options"]
    assert recorded == {
        "key": "***",
        "secret": "***",
        "token": "***",
        "s3": {"account_key": "***", "client_kwargs": {"region_name": "eu-west-1"}},
    }
    assert spec.storage_options == options  # the job itself keeps them
