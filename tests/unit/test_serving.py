"""bench.serving: definitions, placeholders, command rendering, and the process lifecycle against a tiny
Python HTTP server (no llama.cpp needed)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml

from bench import provision as pv
from bench import serving as sv
from bench.scenario import ManagedServerSpec

SHIPPED = {"llamacpp", "vllm", "sglang", "tgi", "triton"}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("BENCHBOX_CACHE", str(root))
    return root


def _write(dir_: Path, name: str, data: dict) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    p = dir_ / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _fake_install(cache: Path) -> None:
    d = cache / "llamacpp" / pv.LLAMACPP_VERSION
    (d / "bin").mkdir(parents=True)
    for t in pv.LLAMACPP_TARGETS:
        (d / "bin" / t).write_text("#!/bin/sh\n")
        (d / "bin" / t).chmod(0o755)
    (d / "build.json").write_text(json.dumps({
        "version": pv.LLAMACPP_VERSION, "cmake_flags": list(pv.CMAKE_FLAGS),
        "server_version": "version: fake"}))
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "smollm2-135m-q4_1.gguf").write_bytes(b"GGUF" + b"\0" * 100)


# ------------------------------------------------------------------------------------------------ definitions
def test_every_shipped_definition_parses():
    found = {name: d for name, _, d in sv.list_definitions([sv.REPO_SERVERS])}
    assert SHIPPED <= set(found)
    for name, d in found.items():
        assert isinstance(d, sv.ServerDefinition), d
        assert d.name == name and d.description and d.health_url and d.base_url
    assert found["llamacpp"].provision == "llamacpp" and found["llamacpp"].kind == "command"
    for name in ("vllm", "sglang", "tgi", "triton"):
        assert found[name].kind == "docker" and found[name].command[:2] == ["docker", "run"]
        assert "--gpus" in found[name].command and "{image}" in found[name].command
    assert "{host}:{metrics_port}:8002" in found["triton"].command
    assert found["triton"].metrics_url == "http://{host}:{metrics_port}/metrics"


def test_llamacpp_definition_flags():
    d = sv.load_definition("llamacpp", [sv.REPO_SERVERS])
    for flag in ("--metrics", "--slots", "--no-webui", "--cont-batching", "-np", "-c", "--threads",
                 "--alias"):
        assert flag in d.command
    assert int(d.defaults["ctx"]) // int(d.defaults["parallel"]) >= 2048  # per-slot context for the eval sets


def test_placeholders_and_render():
    assert sv.placeholders("http://{host}:{port}/x") == {"host", "port"}
    assert sv.placeholders("{{literal}} {port}") == {"port"}
    assert sv.render("http://{host}:{port}", {"host": "h", "port": "1"}) == "http://h:1"
    assert sv.render("{{x}}", {}) == "{x}"
    with pytest.raises(sv.ServerError, match=r"unknown placeholder \{nope\}"):
        sv.render("--x={nope}", {"port": "1"})
    with pytest.raises(ValueError, match="format specs"):
        sv.placeholders("{port:>5}")
    with pytest.raises(ValueError, match="bad placeholder"):
        sv.placeholders("{0}")


BASE = {"name": "t", "command": ["x", "{port}"], "health_url": "http://{host}:{port}/h",
        "base_url": "http://{host}:{port}"}


def test_unknown_placeholder_is_a_clear_error(tmp_path):
    p = _write(tmp_path, "bad", {**BASE, "command": ["x", "--np", "{paralel}"]})
    with pytest.raises(sv.ServerError, match=r"bad.yaml: command\[2\]: unknown placeholder \{paralel\}") as e:
        sv.parse_definition(p)
    assert "add it to 'defaults'" in str(e.value)
    ok = _write(tmp_path, "ok", {**BASE, "command": ["x", "{paralel}"], "defaults": {"paralel": 4}})
    assert sv.parse_definition(ok).defaults["paralel"] == 4


def test_definition_validation_errors(tmp_path):
    with pytest.raises(sv.ServerError, match="colour: unknown key"):
        sv.parse_definition(_write(tmp_path, "a", {**BASE, "colour": "red"}))
    with pytest.raises(sv.ServerError, match="defaults.port: computed by benchbox"):
        sv.parse_definition(_write(tmp_path, "b", {**BASE, "defaults": {"port": 1}}))
    with pytest.raises(sv.ServerError, match="kind"):
        sv.parse_definition(_write(tmp_path, "c", {**BASE, "kind": "podman"}))
    (tmp_path / "d.yaml").write_text("name: [unclosed\n")
    with pytest.raises(sv.ServerError, match="d.yaml:.*invalid YAML"):
        sv.parse_definition(tmp_path / "d.yaml")


def test_load_definition_by_name_path_and_missing(tmp_path):
    p = _write(tmp_path / "servers", "mine", BASE)
    assert sv.load_definition("mine", [tmp_path / "servers"]).path == p
    assert sv.load_definition(str(p), []).name == "t"
    assert sv.load_definition("llamacpp", [tmp_path / "servers", sv.REPO_SERVERS]).name == "llamacpp"
    with pytest.raises(sv.ServerError, match=r"no server definition 'nope'.*available: .*llamacpp"):
        sv.load_definition("nope", [tmp_path / "servers", sv.REPO_SERVERS])
    with pytest.raises(sv.ServerError, match="definition file not found"):
        sv.load_definition(str(tmp_path / "none.yaml"), [])


def test_earlier_search_dir_wins(tmp_path):
    _write(tmp_path / "servers", "llamacpp", {**BASE, "name": "llamacpp", "description": "override"})
    assert sv.load_definition("llamacpp", [tmp_path / "servers", sv.REPO_SERVERS]).description == "override"


def test_redact():
    argv = ["srv", "--api-key", "s3cret", "--hf-token=abc", "HF_TOKEN=xyz", "--port", "1", "-e", "HF_TOKEN"]
    assert sv.redact(argv) == ["srv", "--api-key", "***", "--hf-token=***", "HF_TOKEN=***", "--port", "1",
                               "-e", "HF_TOKEN"]


# ------------------------------------------------------------------------------------------------ rendering
def test_llamacpp_command_is_rendered(cache):
    _fake_install(cache)
    spec = ManagedServerSpec(definition="llamacpp", model="smollm2-135m-q4_1", args=["--seed", "{literal}"])
    s = sv.ManagedServer(spec, "base", cache / "srv.log", [sv.REPO_SERVERS])
    s.prepare()
    a = s.argv
    assert a[0] == str(cache / "llamacpp" / pv.LLAMACPP_VERSION / "bin" / "llama-server")
    assert a[a.index("--port") + 1] == str(s.port) and a[a.index("--host") + 1] == "127.0.0.1"
    assert a[a.index("-m") + 1] == str(cache / "models" / "smollm2-135m-q4_1.gguf")
    assert a[a.index("--alias") + 1] == "smollm2-135m-q4_1"
    assert a[a.index("--threads") + 1] == str(sv.cpu_count())
    assert a[a.index("-np") + 1] == "8" and a[a.index("-c") + 1] == "16384"
    assert a[-2:] == ["--seed", "{literal}"]  # scenario args are passed verbatim
    assert s.base_url == f"http://127.0.0.1:{s.port}" and s.metrics_url == f"{s.base_url}/metrics"
    desc = s.describe()
    assert desc["definition"] == "llamacpp" and desc["model_facts"]["size_bytes"] == 104
    assert desc["llamacpp"]["version"] == pv.LLAMACPP_VERSION and desc["launch_to_ready_s"] is None


def test_model_path_and_default_model(cache, tmp_path):
    _fake_install(cache)
    own = tmp_path / "own-model.gguf"
    own.write_bytes(b"GGUF")
    s = sv.ManagedServer(ManagedServerSpec(definition="llamacpp", model=str(own)), "t", tmp_path / "l.log",
                         [sv.REPO_SERVERS], port=18123)
    s.prepare()
    assert s.argv[s.argv.index("-m") + 1] == str(own) and s.argv[s.argv.index("--alias") + 1] == "own-model"
    assert s.port == 18123
    s2 = sv.ManagedServer(ManagedServerSpec(definition="llamacpp"), "t", tmp_path / "l.log",
                          [sv.REPO_SERVERS])
    s2.prepare()
    assert s2.argv[s2.argv.index("--alias") + 1] == "smollm2-135m-q4_1"


def test_missing_model_file_is_a_server_error(cache, tmp_path):
    _fake_install(cache)
    s = sv.ManagedServer(ManagedServerSpec(definition="llamacpp", model=str(tmp_path / "no.gguf")), "t",
                         tmp_path / "l.log", [sv.REPO_SERVERS])
    with pytest.raises(sv.ServerError, match=r"server 't' \(llamacpp\): model file not found"):
        s.prepare()


def test_docker_definitions_render(monkeypatch, tmp_path):
    monkeypatch.setattr(sv.shutil, "which", lambda name: "/usr/bin/docker" if name == "docker" else None)
    s = sv.ManagedServer(ManagedServerSpec(definition="vllm", model="org/Model-1B"), "cand.1",
                         tmp_path / "l.log", [sv.REPO_SERVERS])
    s.prepare()
    a = s.argv
    assert a[a.index("-p") + 1] == f"127.0.0.1:{s.port}:8000"
    assert a[a.index("--name") + 1] == f"benchbox-cand.1-{s.port}"
    assert a[a.index("--model") + 1] == "org/Model-1B"
    assert a[a.index("--served-model-name") + 1] == "org/Model-1B"
    assert s._stop_argv == ["docker", "stop", "--time", "10", f"benchbox-cand.1-{s.port}"]
    repo = tmp_path / "model_repository"
    repo.mkdir()
    t = sv.ManagedServer(ManagedServerSpec(definition="triton", model=str(repo)), "tr", tmp_path / "l.log",
                         [sv.REPO_SERVERS])
    t.prepare()
    assert t.metrics_port and t.metrics_port != t.port
    assert f"127.0.0.1:{t.metrics_port}:8002" in t.argv and f"{repo}:/models:ro" in t.argv
    assert t.metrics_url == f"http://127.0.0.1:{t.metrics_port}/metrics"
    assert t.health_url.endswith("/v2/health/ready")


def test_docker_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(sv.shutil, "which", lambda name: None)
    s = sv.ManagedServer(ManagedServerSpec(definition="tgi"), "t", tmp_path / "l.log", [sv.REPO_SERVERS])
    with pytest.raises(sv.ServerError, match="runs docker, which is not installed"):
        s.prepare()


def test_triton_needs_a_model(tmp_path, monkeypatch):
    monkeypatch.setattr(sv.shutil, "which", lambda name: "/usr/bin/docker")
    s = sv.ManagedServer(ManagedServerSpec(definition="triton"), "t", tmp_path / "l.log", [sv.REPO_SERVERS])
    with pytest.raises(sv.ServerError, match="needs a model; set server.model"):
        s.prepare()


# ------------------------------------------------------------------------------------------------ lifecycle
FAKE_SERVER = textwrap.dedent("""
    import http.server, os, signal, subprocess, sys, time
    port, delay, mode = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    t0 = time.monotonic()
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "child":
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ready = time.monotonic() - t0 >= delay
            self.send_response(200 if ready else 503)
            self.end_headers()
            self.wfile.write(b"ok" if ready else b"loading")
        def log_message(self, *a):
            pass
    print("fake server listening", port, flush=True)
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")


def _fake_def(tmp_path: Path, mode: str = "plain", delay: float = 0.3, **extra) -> Path:
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    return _write(tmp_path / "servers", f"fake-{mode}", {
        "name": f"fake-{mode}", "command": [sys.executable, str(script), "{port}", "{delay}", mode],
        "health_url": "http://{host}:{port}/health", "base_url": "http://{host}:{port}",
        "defaults": {"delay": delay}, "startup_timeout_s": 20, **extra})


def _server(tmp_path, defn: Path, **kw) -> sv.ManagedServer:
    return sv.ManagedServer(ManagedServerSpec(definition=str(defn), **kw), "fake",
                            tmp_path / "logs" / "fake.log", [tmp_path / "servers"])


def test_start_ready_stop(tmp_path):
    s = _server(tmp_path, _fake_def(tmp_path, delay=0.3))

    async def go():
        await s.start()
        assert s.launch_to_ready_s is not None and 0.3 <= s.launch_to_ready_s < 10
        assert await sv.http_status(s.base_url + "/health") == 200
        assert s.exited() is None
        pid = s.describe()["pid"]
        await s.stop()
        await s.stop()  # idempotent
        return pid

    pid = asyncio.run(go())
    assert not psutil.pid_exists(pid)
    assert "fake server listening" in s.log_tail()
    assert s.log_tail(100).startswith("# benchbox ")
    assert s not in sv._LIVE


def test_command_exiting_immediately(tmp_path):
    p = _write(tmp_path / "servers", "broken", {**BASE, "name": "broken", "command": [
        sys.executable, "-c", "import sys; print('error: unknown argument --frobnicate'); sys.exit(3)"]})
    s = _server(tmp_path, p)
    with pytest.raises(sv.ServerError) as e:
        asyncio.run(s.start())
    lines = str(e.value).splitlines()
    assert lines[0].startswith("server 'fake' (broken) exited with code 3 before it was ready")
    assert "error: unknown argument --frobnicate" in lines


def test_not_ready_in_time(tmp_path):
    s = _server(tmp_path, _fake_def(tmp_path, delay=60), startup_timeout_s=0.6)
    with pytest.raises(sv.ServerError, match=r"was not ready after 0.6 s \(.*last answered 503\)"):
        asyncio.run(s.start())
    assert s.exited() is not None  # stopped on failure


def test_command_not_found(tmp_path):
    p = _write(tmp_path / "servers", "nf", {**BASE, "name": "nf", "command": ["/no/such/binary", "{port}"]})
    with pytest.raises(sv.ServerError, match="command not found or not executable: /no/such/binary"):
        asyncio.run(_server(tmp_path, p).start())


def test_stop_kills_stubborn_process_and_its_children(tmp_path, monkeypatch):
    monkeypatch.setattr(sv, "STOP_GRACE_S", 0.5)
    for mode in ("stubborn", "child"):
        s = _server(tmp_path, _fake_def(tmp_path, mode=mode, delay=0))

        async def go():
            await s.start()
            proc = psutil.Process(s.describe()["pid"])
            time.sleep(0.3)  # let the child start
            family = [proc, *proc.children(recursive=True)]
            t0 = time.monotonic()
            await s.stop()
            return family, time.monotonic() - t0

        family, took = asyncio.run(go())
        assert took < 5
        for p in family:
            assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE, (mode, p)


def test_exited_reports_external_kill(tmp_path):
    s = _server(tmp_path, _fake_def(tmp_path, delay=0))

    async def go():
        await s.start()
        os.kill(s.describe()["pid"], signal.SIGKILL)
        for _ in range(100):
            if s.exited() is not None:
                break
            await asyncio.sleep(0.05)
        code = s.exited()
        await s.stop()
        return code

    assert asyncio.run(go()) == -signal.SIGKILL


def test_atexit_hook_stops_live_servers(tmp_path):
    s = _server(tmp_path, _fake_def(tmp_path, delay=0))
    asyncio.run(s.start())
    pid = s.describe()["pid"]
    assert s in sv._LIVE
    sv._stop_all_at_exit()
    assert not psutil.pid_exists(pid) and s not in sv._LIVE


def test_env_is_passed_and_rendered(tmp_path):
    out = tmp_path / "env.txt"
    p = _write(tmp_path / "servers", "envy", {
        **BASE, "name": "envy", "env": {"FAKE_PORT": "{port}"},
        "command": [sys.executable, "-c",
                    f"import os; open({str(out)!r}, 'w').write("
                    "os.environ['FAKE_PORT'] + ' ' + os.environ['EXTRA'])"]})
    s = _server(tmp_path, p, env={"EXTRA": "yes"})
    with pytest.raises(sv.ServerError, match="exited with code 0"):
        asyncio.run(s.start())
    assert out.read_text() == f"{s.port} yes"
    assert s.describe()["env_keys"] == ["EXTRA", "FAKE_PORT"]


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_list_and_models(cache, monkeypatch):
    from click.testing import CliRunner

    from bench.server_cli import server_group

    monkeypatch.setenv("COLUMNS", "300")
    _fake_install(cache)
    r = CliRunner().invoke(server_group, ["list"], terminal_width=200)
    assert r.exit_code == 0, r.output
    for name in SHIPPED:
        assert name in r.output
    r = CliRunner().invoke(server_group, ["models"], terminal_width=250)
    assert r.exit_code == 0, r.output
    assert "smollm2-135m-q2_k" in r.output and "gemma3-270m-q4_k_m" in r.output
    assert str(cache / "llamacpp") in r.output.replace("\n", "")


def test_cli_start_unknown_definition(tmp_path):
    from click.testing import CliRunner

    from bench.server_cli import server_group

    r = CliRunner().invoke(server_group, ["start", "no-such-server"])
    assert r.exit_code == 1 and "no server definition 'no-such-server'" in r.output


def test_port_race_is_retried(tmp_path):
    marker = tmp_path / "first-attempt-done"
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(textwrap.dedent(f"""
        import os, sys
        if not os.path.exists({str(marker)!r}):
            open({str(marker)!r}, "w").close()
            print("couldn't bind HTTP server socket, hostname: 127.0.0.1, port:", sys.argv[1])
            sys.exit(1)
        os.execv(sys.executable, [sys.executable, {str(script)!r}, sys.argv[1], "0", "plain"])
    """))
    p = _write(tmp_path / "servers", "racy",
               {**BASE, "name": "racy", "command": [sys.executable, str(wrapper), "{port}"]})
    s = _server(tmp_path, p)

    async def go():
        await s.start()
        ok = await sv.http_status(s.base_url + "/health")
        await s.stop()
        return ok

    assert asyncio.run(go()) == 200
    assert marker.exists()
