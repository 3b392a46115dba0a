"""The deployment files agree with each other and with the code: compose services, Dockerfile stages, env keys,
settings fields and the health-check route."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docker-compose.yml (dev extra)")

try:
    from tests._deploy_paths import COMPOSE, COMPOSE_GPU, DEPLOY_README, DOCKERFILE, ENV_EXAMPLE, ROOT
except ImportError:  # tests/ on sys.path instead of the repository root
    from _deploy_paths import COMPOSE, COMPOSE_GPU, DEPLOY_README, DOCKERFILE, ENV_EXAMPLE, ROOT

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")
_ENV_LINE = re.compile(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _env_example() -> tuple[dict[str, str], set[str]]:
    """(keys set in env.example with their values, every key it documents, commented-out ones included)."""
    values: dict[str, str] = {}
    documented: set[str] = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = _ENV_LINE.match(line)
        if m:
            documented.add(m.group(1))
            if not line.lstrip().startswith("#"):
                values[m.group(1)] = m.group(2)
    return values, documented


def _stages() -> set[str]:
    return set(re.findall(r"(?im)^FROM\s+\S+\s+AS\s+([A-Za-z0-9_.-]+)\s*$", DOCKERFILE.read_text()))


def test_services_and_profiles(compose: dict) -> None:
    services = compose["services"]
    assert {"api", "worker", "ray-head"} <= set(services)
    assert "profiles" not in services["api"]  # `docker compose up` starts the API
    assert services["worker"]["profiles"] == ["batch"]
    assert services["ray-head"]["profiles"] == ["ray"]
    assert services["api"]["command"] == ["miner", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert services["worker"]["command"][:2] == ["miner", "mine"]
    for name, svc in services.items():
        # GPUs are reserved by docker-compose.gpu.yml only (tests/test_deploy_compose.py)
        assert "deploy" not in svc, name
        assert svc["environment"]["MINER_HOME"] == "/data" and svc["environment"]["HF_HOME"].startswith(
            "/models"
        )
        mounts = {v.rsplit(":", 1)[-1] for v in svc["volumes"]}
        assert {"/data", "/models"} <= mounts, name


def test_build_targets_are_dockerfile_stages(compose: dict) -> None:
    stages = _stages()
    assert {"base", "builder", "cpu", "cuda"} <= stages
    gpu = yaml.safe_load(COMPOSE_GPU.read_text())
    for name, svc in compose["services"].items():
        build = svc.get("build")
        assert build, f"service {name} has no build section"
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        for target in (build["target"], gpu["services"][name]["build"]["target"]):
            assert target in stages, f"{name}: target {target!r} is not a stage of {DOCKERFILE}"
    text = DOCKERFILE.read_text()
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    assert "nvidia/cuda:12." in gpu["x-gpu-build"]["args"]["BASE_IMAGE"]
    assert "faiss-gpu-cu12" in gpu["x-gpu-build"]["args"]["FAISS_PACKAGE"]


def test_every_compose_variable_is_documented_in_env_example(compose: dict) -> None:
    values, documented = _env_example()
    used = set(_VAR.findall(COMPOSE.read_text())) | set(_VAR.findall(COMPOSE_GPU.read_text()))
    for svc in compose["services"].values():
        used |= set(svc.get("environment", {}))
    assert used, "the compose file uses no variables: the parser is broken"
    missing = sorted(used - documented)
    assert not missing, f"used by the compose files but not in deploy/env.example: {missing}"
    assert "deploy/env.example" in compose["services"]["api"]["env_file"]
    # cp deploy/env.example .env makes .env the override file
    assert values.get("MINER_ENV_FILE") == ".env"


def test_env_example_keys_are_settings_or_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.settings import Settings

    values, documented = _env_example()
    fields = {f"MINER_{name.upper()}" for name in Settings.model_fields}
    readme = DEPLOY_README.read_text()
    for key in sorted(k for k in documented if k.startswith("MINER_")):
        assert key in fields or f"`{key}`" in readme, (
            f"{key} in deploy/env.example is neither a field of api.settings.Settings nor documented in "
            "deploy/README.md"
        )
    # The values set there are valid settings (what the API container starts with).
    for key in [k for k in os.environ if k.startswith("MINER_")]:
        monkeypatch.delenv(key)
    for key, value in values.items():
        if key in fields:
            monkeypatch.setenv(key, value)
    settings = Settings()
    assert str(settings.home) == "/data" and settings.load_in_background


def test_healthcheck_hits_the_readiness_route(compose: dict) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import Settings

    test = compose["services"]["api"]["healthcheck"]["test"]
    urls = [part for part in test if isinstance(part, str) and "://" in part]
    assert len(urls) == 1, test
    port = int(compose["services"]["api"]["command"][-1])
    m = re.match(r"^https?://[^/:]+:(\d+)(/\S*)$", urls[0])
    assert m and int(m.group(1)) == port, urls[0]
    path = m.group(2)
    app = create_app(Settings(home=Path("/nonexistent")))

    def paths(routes: list) -> set[str]:
        out: set[str] = set()
        for r in routes:
            if getattr(r, "path", None):
                out.add(r.path)
            inner = getattr(getattr(r, "original_router", None), "routes", None) or getattr(r, "routes", None)
            if inner:
                out |= paths(inner)
        return out

    assert path in paths(app.routes)
    # Without the lifespan nothing is loaded: the route answers 503 "loading" (what an unready container is).
    response = TestClient(app).get(path)
    assert response.status_code == 503 and response.json()["status"] == "loading"
    assert f"127.0.0.1:8000{path}" in DOCKERFILE.read_text()  # the image's own HEALTHCHECK agrees
