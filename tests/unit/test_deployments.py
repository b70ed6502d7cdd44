"""Deployment files that launch real inference servers (no GPU here, so they are checked as files):
docker/compose.yaml's vLLM / SGLang / TGI / Triton services (GPU reservation, model volume, published
API and metrics ports that Prometheus scrapes), servers/*.yaml (the flags each server needs), the Triton
model repository example and benchbox's own Dockerfile. With a compose binary on the machine the
compose file is also validated by it, once per profile."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bench import server_defs

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
# service -> (container API port, container metrics port, a flag its command must carry)
SERVERS = {"vllm": (8000, 8000, "--served-model-name"), "sglang": (30000, 30000, "--enable-metrics"),
           "tgi": (80, 80, "--model-id"), "triton": (8000, 8002, "--metrics-port=8002")}


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def published(service: dict) -> dict[int, str]:
    """container port -> host binding, from "127.0.0.1:HOST:CONTAINER" entries."""
    out = {}
    for entry in service.get("ports", []):
        host_ip, host_port, container = str(entry).split(":")
        out[int(container)] = f"{host_ip}:{host_port}"
    return out


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_compose_server_services(name: str) -> None:
    svc = compose()["services"][name]
    api, metrics, flag = SERVERS[name]
    assert svc["profiles"] == [name]
    [gpu] = svc["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"] and gpu["count"] == "all"
    ports = published(svc)
    assert api in ports and metrics in ports and all(b.startswith("127.0.0.1:") for b in ports.values())
    assert any(flag in str(part) for part in svc["command"]), svc["command"]
    mounts = [v.removesuffix(":ro").rsplit(":", 1)[1] for v in svc["volumes"]]  # host side may hold ${VAR:-x}
    assert "/root/.cache/huggingface" in mounts or "/data" in mounts  # the model cache survives restarts
    assert "HF_TOKEN" in svc["environment"]
    assert svc["healthcheck"]["start_period"]


def test_prometheus_scrapes_every_server_on_its_metrics_port() -> None:
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    for name, (_, metrics, _) in SERVERS.items():
        assert jobs[name] == [f"{name}:{metrics}"]


def test_triton_service_mounts_a_model_repository() -> None:
    svc = compose()["services"]["triton"]
    assert "--model-repository=/models" in svc["command"] and "--grpc-port=8001" in svc["command"]
    repo_mount = next(v for v in svc["volumes"] if ":/models" in v)
    assert "./triton/model_repository" in repo_mount
    config = (DOCKER / "triton/model_repository/vllm_model/config.pbtxt").read_text()
    assert 'backend: "vllm"' in config and "REPORT_CUSTOM_METRICS" in config
    engine = json.loads((DOCKER / "triton/model_repository/vllm_model/1/model.json").read_text())
    assert engine["model"] and 0 < engine["gpu_memory_utilization"] <= 1


def test_server_definitions_carry_the_right_flags() -> None:
    defs = {n: d for n, _, d in server_defs.list_definitions([server_defs.REPO_SERVERS])}
    cmd = {n: " ".join(d.command) for n, d in defs.items() if not isinstance(d, str)}
    for flag in ("--gpus all", "{host}:{port}:8000", "--served-model-name {model}", "--max-num-seqs {parallel}",
                 "--gpu-memory-utilization", "--max-model-len", "{hf_cache}:/root/.cache/huggingface"):
        assert flag in cmd["vllm"], flag
    for flag in ("--gpus all", "{host}:{port}:30000", "--port 30000", "--enable-metrics", "--model-path {model}"):
        assert flag in cmd["sglang"], flag
    for flag in ("--gpus all", "{host}:{port}:80", "--model-id {model}", "--max-total-tokens", "{hf_cache}/hub:/data"):
        assert flag in cmd["tgi"], flag
    for flag in ("--gpus all", "{host}:{port}:8000", "{host}:{metrics_port}:8002", "--metrics-port=8002",
                 "--model-repository=/models", "{model_path}:/models:ro"):
        assert flag in cmd["triton"], flag
    assert defs["triton"].health_url.endswith("/v2/health/ready")
    for name in ("vllm", "sglang", "tgi"):
        assert defs[name].metrics_url == "http://{host}:{port}/metrics"  # metrics on the API port


def test_benchbox_dockerfile() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert text.count("FROM ") == 1 and 'pip install -e ".[triton]"' in text
    for line in ("COPY servers/ servers/", "COPY scenarios/ scenarios/", "COPY quality/ quality/",
                 'ENTRYPOINT ["benchbox"]', "USER benchbox"):
        assert line in text
    service = compose()["services"]["benchbox"]
    assert service["build"]["dockerfile"] == "docker/Dockerfile"


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.mark.parametrize("profile", ["vllm", "sglang", "tgi", "triton", "bench"])
def test_compose_config_validates(profile: str) -> None:
    cmd = _compose_command()
    if cmd is None:
        pytest.skip("no `docker compose` here; the file is checked by the tests above")
    proc = subprocess.run([*cmd, "-f", str(DOCKER / "compose.yaml"), "--profile", profile, "config", "-q"],
                          capture_output=True, text=True, cwd=DOCKER)
    assert proc.returncode == 0, proc.stderr
