"""Run a palette-dask job on a SLURM cluster through dask-jobqueue.

On the login node, with palette-dask and dask-jobqueue installed in
~/palette-dask-env and deploy/hpc/jobqueue.yaml in Dask's configuration:

    python deploy/hpc/launch.py jobs/slurm.toml --jobs 4

Each SLURM job starts single-threaded workers (see jobqueue.yaml); the job
waits for the first workers, runs, and releases them when it ends. A job cut
short by the wall time is resumed by running the same command again.
"""

from __future__ import annotations

import argparse
import sys

import dask
import yaml
from dask_jobqueue import SLURMCluster
from distributed import Client

from palette_dask import JobSpec, run_job
from palette_dask.cluster import EMBEDDED_CLUSTER_CONFIG

CONFIG = __file__.replace("launch.py", "jobqueue.yaml")


def slurm_cluster(**options) -> SLURMCluster:
    """A SLURMCluster with this folder's jobqueue.yaml settings (``options`` override them).

    ``processes`` equal to ``cores`` gives single-threaded workers.
    """
    with open(CONFIG) as f:
        slurm = yaml.safe_load(f)["jobqueue"]["slurm"]
    settings = {key.replace("-", "_"): value for key, value in slurm.items()}
    # One thread per worker and, as in the embedded cluster, one partition at a time.
    with dask.config.set(EMBEDDED_CLUSTER_CONFIG):
        return SLURMCluster(worker_extra_args=["--nthreads", "1"], **{**settings, **options})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="the job spec (TOML)")
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs to start")
    args = parser.parse_args(argv)
    spec = JobSpec.from_toml(args.spec)
    with slurm_cluster() as cluster, Client(cluster) as client:
        cluster.scale(jobs=args.jobs)
        client.wait_for_workers(1, timeout=3600)
        report = run_job(spec, client=client, progress=True)
    print(f"{report.images} images ({report.errors} failed) in {report.elapsed_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
