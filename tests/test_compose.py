"""compose.yaml: the file is validated against the official Compose specification
schema (the copy check-jsonschema vendors; this machine has Debian's docker.io,
without the Compose v2 plugin, so `docker compose config` cannot run here), its
security properties are checked as data, and the app's settings are resolved from
the variables Compose and Docker Model Runner inject."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BIN, ROOT
from minionflow.contracts.settings import ModelSpec, ModelSpecError, default_settings
from minionflow.sandbox.base import runner_source
from minionflow.storage.persistence import describe, is_postgres, resolve_location

SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())  # type: ignore[no-any-return]


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} against an environment."""
    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == ":-" else ""
    return re.sub(r"\$\{([A-Z0-9_]+)(:-|:\?)?([^}]*)\}", one, value)


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    checker = str(BIN / "check-jsonschema")
    return subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_compose_yaml_follows_the_compose_specification(compose, tmp_path):
    out = check_compose_schema(ROOT / "compose.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    # the check can fail: a misspelt key, a malformed models: binding, a bad context size
    broken = {
        "'prots' was unexpected": lambda c: c["services"]["app"].__setitem__("prots", ["127.0.0.1:1:1"]),
        "$.services.app.models.worker": lambda c: c["services"]["app"]["models"].__setitem__("worker", {"endpoint": "W"}),
        "$.models.worker.context_size": lambda c: c["models"]["worker"].__setitem__("context_size", "big"),
    }
    for i, (error, spoil) in enumerate(broken.items()):
        changed = yaml.safe_load((ROOT / "compose.yaml").read_text())
        spoil(changed)
        path = tmp_path / f"broken-{i}.yaml"
        path.write_text(yaml.safe_dump(changed))
        out = check_compose_schema(path)
        assert out.returncode == 1 and error in out.stdout, (error, out.stdout)


def test_the_worker_comes_from_docker_model_runner(compose):
    worker = compose["models"]["worker"]
    assert worker["model"].startswith("ai/") and int(worker["context_size"]) >= 4096
    for name in ("app", "studio"):
        service = compose["services"][name]
        assert service["models"]["worker"] == {"endpoint_var": "WORKER_URL", "model_var": "WORKER_MODEL"}
        assert service["environment"]["MINIONFLOW_LOCAL"] == "dmr:worker"


def test_ports_are_bound_to_loopback_and_secrets_come_from_the_environment(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        for key, value in (service.get("environment") or {}).items():
            if SECRET.search(key) or "postgresql://" in str(value):
                assert "${" in str(value), f"{name}.{key} holds a literal secret"
    holders = {n for n, s in compose["services"].items() if "OPENAI_API_KEY" in (s.get("environment") or {})}
    assert holders == {"app", "studio"}
    for path in ("Dockerfile", "deploy/sandbox.Dockerfile"):
        for line in (ROOT / path).read_text().splitlines():
            if line.strip().startswith(("ENV", "ARG")):
                assert not SECRET.search(line), f"{path}: {line}"
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_the_supervisor_code_never_runs_in_the_container_with_the_keys(compose):
    sandbox = compose["services"]["sandbox"]
    assert sandbox["network_mode"] == "none" and not sandbox.get("environment") and not sandbox.get("volumes")
    assert sandbox["cap_drop"] == ["ALL"] and sandbox["read_only"] is True
    app = compose["services"]["app"]
    # the app starts a fresh container from that image for each execution, through the engine
    assert app["environment"]["MINIONFLOW_SANDBOX_IMAGE"] == sandbox["image"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in app["volumes"]
    assert app["depends_on"]["sandbox"]["condition"] == "service_completed_successfully"


def test_every_file_compose_builds_from_exists(compose):
    for service in compose["services"].values():
        build = service.get("build")
        if isinstance(build, dict):
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()
        elif build:
            assert (ROOT / build / "Dockerfile").is_file()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert list(ROOT.glob(source)), source
    assert (ROOT / "samples").is_dir()


def test_the_app_image_copies_every_package_pyproject_installs():
    """``pip install .`` in the Dockerfile fails on a package folder it was not given."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = {path.split("/")[0] for path in pyproject["tool"]["setuptools"]["package-dir"].values()}  # nodes/support: in nodes
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")}
    assert folders - copied == set()


def test_the_app_image_builds_llama_cpp_as_the_setup_does():
    """Both builds leave llama.cpp's multimodal and `common` libraries out, with the same
    CMake include file (which must exist, or llama.cpp's configure step fails)."""
    include = "-DCMAKE_PROJECT_llama.cpp_INCLUDE="
    assert (ROOT / "scripts" / "llama-text-only.cmake").is_file()
    for text in ((ROOT / "Dockerfile").read_text(), (ROOT / "scripts" / "setup.sh").read_text()):
        assert "-DLLAVA_BUILD=OFF" in text
        assert re.search(re.escape(include) + r"'?[^ \"']*scripts/llama-text-only\.cmake", text)
    assert "COPY scripts/llama-text-only.cmake ./scripts/" in (ROOT / "Dockerfile").read_text()


def test_the_sandbox_image_gets_the_same_runner(tmp_path):
    """deploy/sandbox.Dockerfile assembles the runner with a shell line: run that line
    here and compare with what the other backends run."""
    dockerfile = (ROOT / "deploy/sandbox.Dockerfile").read_text()
    assembly = re.search(r"\{ cat .*?\} > \S+", dockerfile)
    assert assembly is not None
    src = tmp_path / "tmp/src"
    src.mkdir(parents=True)
    for name in ("chunking.py", "runner.py"):
        (src / name).write_text((ROOT / "sandbox" / name).read_text())
    script = assembly.group(0).replace("/tmp/src", str(src)).rsplit(">", 1)[0] + f"> {tmp_path / 'runner.py'}"
    subprocess.run(["bash", "-c", script], check=True)
    assert (tmp_path / "runner.py").read_text() == runner_source()


def test_the_app_settings_resolve_the_injected_variables(compose, monkeypatch):
    host = {"OPENAI_API_KEY": "sk-test", "POSTGRES_PASSWORD": "s3cret"}
    injected = {"WORKER_URL": "http://model-runner.docker.internal/engines/v1/", "WORKER_MODEL": "ai/qwen3:0.6B-Q4_K_M"}
    env = {k: interpolate(str(v), host) for k, v in compose["services"]["app"]["environment"].items()}
    for key, value in {**env, **injected}.items():
        monkeypatch.setenv(key, value)
    local = ModelSpec.parse(env["MINIONFLOW_LOCAL"])
    assert local.model == "ai/qwen3:0.6B-Q4_K_M" and local.base_url == "http://model-runner.docker.internal/engines/v1"
    settings = default_settings({"remote": env["MINIONFLOW_REMOTE"], "local": env["MINIONFLOW_LOCAL"]})
    assert settings.remote.model == "gpt-4o" and settings.remote.api_key_env == "OPENAI_API_KEY"
    assert settings.max_rounds == 5  # a real supervisor: the full protocol
    location = resolve_location(None)  # from MINIONFLOW_CHECKPOINT
    assert is_postgres(location) and describe(location) == "postgresql://minionflow:***@postgres:5432/minionflow"
    with pytest.raises(KeyError, match="set POSTGRES_PASSWORD"):
        interpolate(compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"], {})
    monkeypatch.delenv("WORKER_URL")
    with pytest.raises(ModelSpecError, match=r"\$WORKER_URL"):
        ModelSpec.parse("dmr:worker")


def test_the_compose_sandbox_image_builds_and_runs_the_supervisor_code(monkeypatch):
    """deploy/sandbox.Dockerfile, built here on the offline Debian base instead of the
    python image (no registry), then used by the docker backend exactly as the app
    container uses it: MINIONFLOW_SANDBOX_IMAGE names it."""
    import docker
    from minionflow.contracts.settings import SandboxLimits
    from minionflow.sandbox.base import ExecutionRequest, SandboxStatus
    from minionflow.sandbox.docker_backend import DockerBackend
    from minionflow.sandbox.image import BASE_TAG

    tag = "minionflow-sandbox:compose-test"
    client = docker.from_env()
    client.images.build(path=str(ROOT), dockerfile="deploy/sandbox.Dockerfile", tag=tag, network_mode="none",
                        buildargs={"PYTHON": BASE_TAG}, rm=True)
    monkeypatch.setenv("MINIONFLOW_SANDBOX_IMAGE", tag)
    backend = DockerBackend()
    assert backend.image == tag
    backend.check()
    code = "def prepare_jobs(context, m, o):\n    return [JobManifest(chunk=c, task='t') for c in chunk_by_tokens(context[0], 10)]\n"
    result = backend.execute(ExecutionRequest(code=code, context=["one two three " * 30], max_jobs=100), SandboxLimits())
    assert result.status is SandboxStatus.OK and len(result.jobs) > 1
