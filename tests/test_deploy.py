"""The deployment files in deploy/, validated without Docker, Kubernetes or SLURM.

Schemas come from the packages that publish them: the Compose specification's
JSON schema as docker-compose ships it, the DaskCluster and DaskJob CRDs as
dask-kubernetes ships them (both wheels fetched by `make install`, pinned in
tests/schema-wheels.txt, not installed), and distributed's own configuration schema.
"""

import copy
import re
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import dask
import distributed
import jsonschema
import pytest
import tomllib
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from palette_dask import JobSpec

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
# The wheels `make install` fetched (tests/schema-wheels.txt): nothing is downloaded here.
WHEELS = Path(sys.prefix) / "schema-wheels"
COMPOSE_SCHEMA = ("docker-compose", "compose/config/compose_spec.json")
CRD_FOLDER = "dask_kubernetes/operator/deployment/helm/dask-kubernetes-operator/crds"
# libyaml's loader where PyYAML has it: the CRDs are large.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def wheel_member(package: str, member: str) -> bytes:
    """A file from a package's wheel, as ``make install`` fetched it (not installed)."""
    pinned = (ROOT / "tests" / "schema-wheels.txt").read_text()
    (release,) = re.findall(rf"^{re.escape(package)}==(\S+)$", pinned, flags=re.M)
    name = package.replace("-", "_")
    wheels = list(WHEELS.glob(f"{name}-{release}-*.whl"))
    if not wheels:
        pytest.fail(f"no {package} {release} wheel in {WHEELS}: run `make install`")
    with zipfile.ZipFile(wheels[0]) as wheel:
        return wheel.read(member)


@pytest.fixture(scope="module")
def crd_validators():
    """A validator per CRD kind, each schema checked once (the CRDs are large)."""
    validators = {}
    for kind in ("DaskCluster", "DaskJob"):
        member = f"{CRD_FOLDER}/{kind.lower()}.yaml"
        crd = yaml.load(wheel_member("dask-kubernetes", member), Loader=SAFE_LOADER)
        (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = served["schema"]["openAPIV3Schema"]
        validator = jsonschema.validators.validator_for(schema)
        validator.check_schema(schema)
        validators[kind] = validator(schema)
    return validators


@pytest.fixture(scope="module")
def compose_schema():
    # The file names a draft-07 meta-schema under an address jsonschema does not know.
    return jsonschema.Draft7Validator(yaml.safe_load(wheel_member(*COMPOSE_SCHEMA)))


def validate_k8s(document: dict, crd_validators) -> None:
    assert document["apiVersion"] == "kubernetes.dask.org/v1"
    crd_validators[document["kind"]].validate(document)


def documents(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def test_every_yaml_file_passes_yamllint():
    config = YamlLintConfig(
        "extends: default\nrules:\n  line-length: {max: 100}\n"
        "  document-start: disable\n  truthy: {check-keys: false}\n"
    )
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert len(files) >= 5
    for path in files:
        problems = list(linter.run(path.read_text(), config))
        assert not problems, f"{path}: {problems}"


def test_kubernetes_manifests_match_the_operator_crds(crd_validators):
    cluster = documents(DEPLOY / "kubernetes" / "daskcluster.yaml")
    job = documents(DEPLOY / "kubernetes" / "daskjob.yaml")
    validated = [d for d in cluster + job if d["kind"] in ("DaskCluster", "DaskJob")]
    assert [d["kind"] for d in validated] == ["DaskCluster", "DaskJob"]
    for document in validated:
        validate_k8s(document, crd_validators)
    # The job's pod reads the job spec from the ConfigMap, which is a valid spec.
    (config_map,) = [d for d in job if d["kind"] == "ConfigMap"]
    spec = JobSpec.from_dict(tomllib.loads(config_map["data"]["job.toml"]))
    assert spec.output.startswith("s3://")
    (daskjob,) = [d for d in job if d["kind"] == "DaskJob"]
    (runner,) = daskjob["spec"]["job"]["spec"]["containers"]
    assert runner["args"][:3] == ["palette-dask", "run", "/etc/palette-dask/job.toml"]
    assert daskjob["spec"]["job"]["spec"]["restartPolicy"] == "OnFailure"
    # Images in object storage: two threads per worker, one decoding while the other reads.
    for workers in (cluster[0]["spec"]["worker"], daskjob["spec"]["cluster"]["spec"]["worker"]):
        args = workers["spec"]["containers"][0]["args"]
        assert args[args.index("--nthreads") + 1] == "2" and "--memory-limit" in args


def test_validation_catches_a_broken_manifest(crd_validators, compose_schema):
    (cluster,) = documents(DEPLOY / "kubernetes" / "daskcluster.yaml")
    without_service = copy.deepcopy(cluster)
    del without_service["spec"]["scheduler"]["service"]
    with pytest.raises(jsonschema.ValidationError, match="'service' is a required property"):
        validate_k8s(without_service, crd_validators)
    bad_replicas = copy.deepcopy(cluster)
    bad_replicas["spec"]["worker"]["replicas"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(bad_replicas, crd_validators)
    (compose,) = documents(DEPLOY / "compose" / "docker-compose.yml")
    misspelt = copy.deepcopy(compose)
    misspelt["services"]["worker"]["comand"] = misspelt["services"]["worker"].pop("command")
    with pytest.raises(jsonschema.ValidationError, match="comand"):
        compose_schema.validate(misspelt)


def test_compose_file_matches_the_compose_specification(compose_schema):
    (compose,) = documents(DEPLOY / "compose" / "docker-compose.yml")
    compose_schema.validate(compose)
    services = compose["services"]
    assert services["scheduler"]["ports"] == ["8786:8786", "8787:8787"]
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["job"]["environment"]["DASK_SCHEDULER_ADDRESS"] == "tcp://scheduler:8786"
    job_spec = services["job"]["command"][2].replace("/opt/palette-dask/", "")
    assert JobSpec.from_toml(ROOT / job_spec).input == ("/data/images",)


def test_dockerfile_base_image_has_our_dask_version():
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)$", dockerfile, flags=re.M)
    image, tag = base.rsplit(":", 1)
    assert image == "ghcr.io/dask/dask"
    assert tag.split("-py")[0] == dask.__version__ == distributed.__version__
    assert tag.endswith(f"-py{sys.version_info.major}.{sys.version_info.minor}")
    pinned = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().split())
    assert pinned["dask"] == dask.__version__
    # Installs happen at build time, with the pins, S3 support included.
    assert 'pip install --no-cache-dir -c constraints.txt ".[s3]"' in dockerfile
    # The clustering loops are compiled into the image, not by each worker.
    assert "warm_up()" in dockerfile


def test_recommended_dask_config_matches_distributed_schema():
    settings = yaml.safe_load((DEPLOY / "dask.yaml").read_text())
    schema = yaml.safe_load(
        (Path(distributed.__file__).parent / "distributed-schema.yaml").read_text()
    )
    jsonschema.validate(settings, schema)
    with dask.config.set(settings):
        assert dask.config.get("distributed.scheduler.worker-saturation") == 1.0
        assert dask.config.get("distributed.scheduler.allowed-failures") == 2


def test_slurm_job_script(monkeypatch):
    monkeypatch.syspath_prepend(str(DEPLOY / "hpc"))
    import launch

    with launch.slurm_cluster() as cluster:
        script = cluster.job_script()
        saturation = cluster.scheduler.WORKER_SATURATION
    assert "#SBATCH --cpus-per-task=8" in script and "#SBATCH --mem=24G" in script
    assert "#SBATCH -t 02:00:00" in script and "#SBATCH --exclusive" in script
    assert "--nthreads 1" in script and "--nworkers 8" in script
    assert "source ~/palette-dask-env/bin/activate" in script
    assert saturation == 1.0
    assert version("dask-jobqueue")


def test_every_job_spec_in_jobs_is_valid():
    specs = sorted((ROOT / "jobs").glob("*.toml"))
    assert {p.stem for p in specs} >= {"sample", "corpus", "compose", "kubernetes", "slurm"}
    for path in specs:
        JobSpec.from_toml(path)
