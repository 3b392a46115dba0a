"""The deployment files both deploy tests read (test_deploy.py: they agree with the code; test_deploy_compose.py:
they build and start without a registry)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
DEPLOY_README = ROOT / "deploy" / "README.md"
SMOKE = ROOT / "deploy" / "smoke.sh"
CI = ROOT / ".ci" / "run"
DOCKERIGNORE = ROOT / ".dockerignore"
