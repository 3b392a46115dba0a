"""The deployment builds and starts without a registry, on CPU hosts, with Debian's docker-compose 1.29 and
with Compose v2: one test (or more) per failure of issue 17, and `docker-compose config` on both files.

The failures, and what catches each again (deploy/smoke.sh runs the whole thing end to end):
1. a base image that only a registry has      -> test_base_image_is_a_build_argument, smoke step "base image"
2. `# syntax=` makes BuildKit pull a frontend  -> test_no_registry_only_dockerfile_syntax
3. python3.10 hard-coded                       -> test_python_is_a_build_argument, smoke step "build"
4. torch from a hard-coded index               -> test_torch_index_and_local_wheels_are_build_arguments
5. `{path, required}` env_file entries         -> test_env_file_entries_are_plain_paths, test_compose_config
6. `count: ${MINER_GPUS:-1}` (a string)        -> test_gpu_counts_are_literals, test_compose_config
7. the GPU reservation in the shared block     -> test_gpu_reservation_only_in_the_override, test_compose_config,
                                                  smoke step "up -d api" on a host without the NVIDIA runtime
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the compose files (dev extra)")

try:
    from tests._deploy_paths import CI, COMPOSE, COMPOSE_GPU, DOCKERFILE, DOCKERIGNORE, ROOT, SMOKE
except ImportError:  # tests/ on sys.path instead of the repository root
    from _deploy_paths import CI, COMPOSE, COMPOSE_GPU, DOCKERFILE, DOCKERIGNORE, ROOT, SMOKE


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), path
    return data


def _dockerfile_instructions() -> list[str]:
    """Instructions with their continuation lines joined, comments dropped."""
    out: list[str] = []
    parts: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.endswith("\\"):
            parts.append(text[:-1].strip())
            continue
        out.append(" ".join([*parts, text]))
        parts = []
    return out


def _walk(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(key path, value) of every mapping entry, depth first."""
    found: list[tuple[tuple[str, ...], Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append(((*path, str(key)), value))
            found += _walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _walk(value, (*path, str(i)))
    return found


def _devices(data: dict[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    return [(p, v) for p, v in _walk(data) if p[-1] == "devices"]


# --------------------------------------------------------------------------------------- 1. base image


def test_base_image_is_a_build_argument() -> None:
    instructions = _dockerfile_instructions()
    stages: set[str] = set()
    for ins in instructions:
        m = re.match(r"(?i)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$", ins)
        if m:
            # every stage starts from the BASE_IMAGE argument or from an earlier stage, never a fixed image
            assert m.group(1) == "${BASE_IMAGE}" or m.group(1) in stages, ins
            stages.add(m.group(2) or "")
    assert {"base", "builder", "cpu", "cuda"} <= stages
    assert re.search(r"(?m)^ARG BASE_IMAGE=\S+$", DOCKERFILE.read_text())
    for path in (COMPOSE, COMPOSE_GPU):
        for name, svc in _load(path)["services"].items():
            assert "${MINER_" in str(svc["build"]["args"]["BASE_IMAGE"]), f"{path.name}: {name}"
    # smoke.sh makes a local base when the configured one cannot be pulled
    smoke = SMOKE.read_text()
    assert "debootstrap --variant=minbase" in smoke and "docker import" in smoke


# ------------------------------------------------------------------------------------ 2. syntax line


def test_no_registry_only_dockerfile_syntax() -> None:
    text = DOCKERFILE.read_text()
    # a `# syntax=` directive makes BuildKit pull that frontend image from a registry
    assert not re.search(r"(?im)^#\s*syntax\s*=", text), "drop the `# syntax=` line (BuildKit pulls it)"
    # BuildKit-only features would break the legacy builder (docker-compose 1.29's default)
    for ins in _dockerfile_instructions():
        assert "--mount=" not in ins and not re.search(r"<<-?\s*['\"]?[A-Za-z]", ins), ins
        assert not re.match(r"(?i)^(COPY|ADD)\s+.*--(link|parents|chmod)\b", ins), ins


# ---------------------------------------------------------------------------------------- 3. python


def test_python_is_a_build_argument() -> None:
    for ins in _dockerfile_instructions():
        if ins.upper().startswith("ARG "):
            continue
        # the interpreter comes from ARG PYTHON, never a literal python3.X
        assert not re.search(r"\bpython3\.\d+", ins), f"hard-coded interpreter in: {ins}"
    text = DOCKERFILE.read_text()
    assert re.search(r"(?m)^ARG PYTHON=python3$", text)
    assert '"${PYTHON}" "${PYTHON}-venv"' in text and '"${PYTHON}" -m venv /opt/venv' in text
    for name, svc in _load(COMPOSE)["services"].items():
        assert svc["build"]["args"]["PYTHON"] == "${MINER_PYTHON:-python3}", name


# ----------------------------------------------------------------------------------------- 4. torch


def test_torch_index_and_local_wheels_are_build_arguments() -> None:
    instructions = _dockerfile_instructions()
    torch_installs = [i for i in instructions if i.startswith("RUN") and '"torch' in i]
    assert len(torch_installs) == 1
    (install,) = torch_installs
    assert '${TORCH_INDEX_URL:+--index-url "${TORCH_INDEX_URL}"}' in install
    assert "--find-links /wheels" in install and "${TORCH_VERSION:+==${TORCH_VERSION}}" in install
    assert "COPY deploy/wheels/ /wheels/" in instructions
    assert "COPY deploy/certs/ /usr/local/share/ca-certificates/extra/" in instructions
    # no index URL outside ARG defaults (the health check's loopback URL aside)
    for ins in instructions:
        if not ins.startswith("ARG "):
            urls = re.findall(r"https?://[^\s\"']+", ins)
            assert all(u.startswith("http://127.0.0.1:") for u in urls), ins
    for path in (COMPOSE, COMPOSE_GPU):
        for name, svc in _load(path)["services"].items():
            args = svc["build"]["args"]
            assert args["TORCH_INDEX_URL"].startswith("${MINER_"), f"{path.name}: {name}"
            assert args["FAISS_PACKAGE"].startswith("${MINER_"), f"{path.name}: {name}"
    gpu = _load(COMPOSE_GPU)["services"]["api"]["build"]["args"]
    assert "faiss-gpu" in gpu["FAISS_PACKAGE"] and "cu1" in gpu["TORCH_INDEX_URL"]


# -------------------------------------------------------------------------------------- 5. env_file


def test_env_file_entries_are_plain_paths() -> None:
    for path in (COMPOSE, COMPOSE_GPU):
        for name, svc in _load(path)["services"].items():
            for entry in svc.get("env_file", []):
                # docker-compose 1.29 rejects the {path, required} form (and fails on a missing file)
                assert isinstance(entry, str), f"{path.name}: {name}: env_file entry {entry!r}"
    env_files = _load(COMPOSE)["services"]["api"]["env_file"]
    assert env_files[0] == "deploy/env.example" and (ROOT / env_files[0]).is_file()
    assert len(set(env_files)) == len(env_files), "docker-compose 1.29 refuses identical env_file entries"


# ------------------------------------------------------------------------------------- 6. GPU count


def test_gpu_counts_are_literals() -> None:
    for path in (COMPOSE, COMPOSE_GPU):
        for where, devices in _devices(_load(path)):
            for device in devices:
                # an interpolated ${...} is a string: docker-compose 1.29 wants an integer or "all"
                count = device.get("count", "all")
                assert (isinstance(count, int) and not isinstance(count, bool)) or count == "all", (
                    f"{path.name}: {'.'.join(where)}: count {count!r}"
                )


# ------------------------------------------------------------------------------ 7. GPU in the override


def test_gpu_reservation_only_in_the_override() -> None:
    base = _load(COMPOSE)
    assert not _devices(base), "docker-compose.yml reserves devices: CPU hosts could not start it"
    assert "nvidia" not in COMPOSE.read_text().split("services:", 1)[1]
    gpu = _load(COMPOSE_GPU)
    assert set(gpu["services"]) == set(base["services"])
    for name, svc in gpu["services"].items():
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert any(d["driver"] == "nvidia" and d["capabilities"] == ["gpu"] for d in devices), name
        assert svc["build"]["target"] == "cuda" and svc["image"] != base["services"][name]["image"], name
    for name, svc in base["services"].items():
        assert svc["build"]["target"] == "cpu", name


# --------------------------------------------------------------------------- docker-compose config


def _compose_commands() -> list[list[str]]:
    commands = []
    if shutil.which("docker-compose"):
        commands.append(["docker-compose"])
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            commands.append(["docker", "compose"])
    return commands


_INSTALL = {
    "docker-compose": "Debian's 1.29: apt-get install docker-compose",
    "docker compose": "Compose v2: the docker-compose-plugin package of Docker's apt repository",
}


@pytest.fixture(params=sorted(_INSTALL))
def compose_cmd(request: pytest.FixtureRequest) -> list[str]:
    cmd = request.param.split()
    if cmd not in _compose_commands():
        pytest.skip(f"`{request.param}` is not installed ({_INSTALL[request.param]})")
    return cmd


def _config(
    cmd: list[str], files: list[Path], tmp_path: Path, extra_env: dict[str, str] | None = None
) -> dict:
    env_file = tmp_path / "empty.env"  # keep a developer's .env out of it
    env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINER_")}
    env.update(extra_env or {})
    args = [*cmd, "--env-file", str(env_file)]
    for f in files:
        args += ["-f", str(f)]
    out = subprocess.run([*args, "config"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, f"{' '.join(args)} config failed:\n{out.stderr}"
    return yaml.safe_load(out.stdout)


def test_compose_config_cpu(compose_cmd: list[str], tmp_path: Path) -> None:
    config = _config(compose_cmd, [COMPOSE], tmp_path)
    api = config["services"]["api"]
    assert "deploy" not in api or not _devices(api["deploy"])
    assert api["build"]["target"] == "cpu" and api["build"]["args"]["BASE_IMAGE"] == "debian:bookworm-slim"
    assert api["environment"]["MINER_HOME"] == "/data" and api["environment"]["HF_HUB_OFFLINE"] == "1"
    # published on loopback only (1.29 prints "127.0.0.1:PORT:8000/tcp", v2 a mapping with host_ip)
    for port in api["ports"]:
        assert (port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]) == "127.0.0.1", port
    assert api["healthcheck"]["test"][-1] == "http://127.0.0.1:8000/readyz"


def test_compose_config_gpu_override(compose_cmd: list[str], tmp_path: Path) -> None:
    config = _config(compose_cmd, [COMPOSE, COMPOSE_GPU], tmp_path)
    for name, svc in config["services"].items():
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["count"] == 1, name
        assert svc["build"]["target"] == "cuda" and "faiss-gpu" in svc["build"]["args"]["FAISS_PACKAGE"], name
        assert svc["build"]["args"]["PYTHON"] == "python3", name  # the base file's args merge in


def test_compose_env_file_override(compose_cmd: list[str], tmp_path: Path) -> None:
    """`.env` with MINER_ENV_FILE=.env layers the user's settings over the documented defaults."""
    mine = tmp_path / "mine.env"
    mine.write_text("MINER_MAX_K=7\n")
    config = _config(compose_cmd, [COMPOSE], tmp_path, {"MINER_ENV_FILE": str(mine)})
    env = config["services"]["api"]["environment"]
    assert str(env["MINER_MAX_K"]) == "7" and str(env["MINER_MAX_TEXTS"]) == "128"


# ------------------------------------------------------------------------------- smoke test and CI


def test_smoke_script_and_ci() -> None:
    out = subprocess.run(["bash", "-n", str(SMOKE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    smoke = SMOKE.read_text()
    for needle in (
        "dockerd",  # starts the engine when none runs ...
        'kill "$STARTED_DOCKERD"',  # ... and stops only that one
        "run --rm worker miner demo",
        "up -d api",
        "/search/speech-to-text",
        "/indexes",
        "/metrics",
        "down",
    ):
        assert needle in smoke, needle
    ci = CI.read_text()
    assert ci.index("python -m pytest") < ci.index("bash deploy/smoke.sh"), ".ci/run runs the smoke test last"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignore = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()]
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert ignore[ignore.index("*")] == "*" and {".venv", ".git", "data"}.isdisjoint(allowed)
    for ins in _dockerfile_instructions():
        m = re.match(r"^COPY\s+(?!--from)(.+)\s+\S+$", ins)
        if m:
            for src in m.group(1).split():
                assert src.rstrip("/") in allowed, f"{src} is copied but .dockerignore leaves it out"
                assert (ROOT / src).exists(), src
