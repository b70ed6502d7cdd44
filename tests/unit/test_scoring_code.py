"""The code scorer: extraction, sandboxed execution, limits, and the real coding eval set."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.dataset import Item, load_dataset
from bench.scoring import ScoreInput, build_scorer
from bench.scoring.code import extract_code

ROOT = Path(__file__).resolve().parents[2]
META = {"entry_point": "add", "tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0",
                                        "assert add(2, 2) == 4", "assert add(0, 0) == 0"]}
GOOD = "def add(a, b):\n    return a + b\n"


def run(text: str, meta=META, **config) -> dict:
    scorer = build_scorer({"name": "code", **config}, ROOT / "scenarios")
    return scorer.score(ScoreInput(Item("c", None, "p", None, (), None, meta), text, "stop"))


def test_correct_code_plain_and_fenced():
    assert run(GOOD) == {"code_pass": True, "code_tests_passed_frac": 1.0, "code_syntax_ok": True,
                         "code_error": None}
    fenced = f"Here is the function:\n\n```python\n{GOOD}```\n\nIt adds the numbers."
    assert run(fenced)["code_pass"] is True


def test_wrong_code_counts_passed_tests():
    out = run("def add(a, b):\n    return a - b if a > 1 else a + b\n")  # fails only add(2, 2)
    assert out == {"code_pass": False, "code_tests_passed_frac": 0.75, "code_syntax_ok": True,
                   "code_error": "AssertionError"}


@pytest.mark.parametrize("text,error", [
    ("def add(a, b)\n    return a + b\n", "SyntaxError"),
    ("def add(a, b):\nreturn a + b\n", "IndentationError"),
    ("Sure! def add(a, b): return a + b", "SyntaxError"),
    ("```python\ndef add(a, b):\n    return a +", "SyntaxError"),                 # truncated by max_tokens
    ("def add(a, b):\n    return a + b\x00", "SyntaxError"),
])
def test_syntax_errors_do_not_run(text, error):
    assert run(text) == {"code_pass": False, "code_tests_passed_frac": 0.0, "code_syntax_ok": False,
                         "code_error": error}


@pytest.mark.parametrize("text,error,frac", [
    ("def plus(a, b):\n    return a + b\n", "NameError", 0.0),
    ("def add(a, b):\n    return a + b\nprint(add(1))\n", "TypeError", 0.0),  # module-level crash fails all
    ("import sys\ndef add(a, b):\n    return a + b\nsys.exit(0)\n", "SystemExit", 0.0),
    ("import os\ndef add(a, b):\n    if a == 2:\n        os._exit(0)\n    return a + b\n", "exited", 0.5),
    ("def add(a, b):\n    return add(a, b)\n", "RecursionError", 0.0),
    ("import numpy_does_not_exist\n" + GOOD, "ModuleNotFoundError", 0.0),
])
def test_runtime_failures_are_named(text, error, frac):
    out = run(text)
    assert (out["code_pass"], out["code_error"], out["code_tests_passed_frac"]) == (False, error, frac)


@pytest.mark.parametrize("text", [
    "def add(a, b):\n    while True:\n        pass\n",
    "while True:\n    pass\n",
    "def add(a, b):\n    return sum(range(10**13))\n",  # one long C call: no bytecode boundary to interrupt
])
def test_infinite_loops_time_out(text):
    t0 = time.monotonic()
    out = run(text, timeout_s=1)
    assert time.monotonic() - t0 < 4
    assert (out["code_pass"], out["code_error"], out["code_syntax_ok"]) == (False, "timeout", True)


def test_timeout_keeps_results_of_finished_tests():
    code = "def add(a, b):\n    while a == 2:\n        pass\n    return a + b\n"
    out = run(code, timeout_s=1)
    assert out["code_error"] == "timeout" and out["code_tests_passed_frac"] == 0.5


@pytest.mark.parametrize("text", [
    "x = bytearray(2**34)\n" + GOOD,
    "x = []\nwhile True:\n    x.append(' ' * 10**7)\n",
    "def add(a, b):\n    return len('a' * 10**10)\n",
])
def test_memory_bombs_hit_the_address_space_limit(text):
    t0 = time.monotonic()
    out = run(text, memory_mb=256)
    assert time.monotonic() - t0 < 4
    assert out["code_pass"] is False and out["code_error"] == "MemoryError"


def test_no_process_spawning(tmp_path):
    marker = tmp_path / "spawned"
    for code in (f"import os\nos.system('touch {marker}')\n", f"import os\nos.popen('touch {marker}')\n",
                 f"import subprocess\nsubprocess.run(['touch', '{marker}'])\n",
                 "import os\nif os.fork() == 0:\n    os._exit(0)\n"):
        out = run(code + GOOD)
        assert out["code_pass"] is False and out["code_error"] in ("TypeError", "ModuleNotFoundError"), out
    assert not marker.exists()


def test_file_writes_stay_in_the_temp_dir(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    relative = ("open('pwned_by_answer.txt', 'w').write('x')\nimport os\n"
                "os.makedirs('sub', exist_ok=True)\nopen('sub/f.txt', 'a').write('y')\n" + GOOD)
    assert run(relative)["code_pass"] is True  # allowed: it lands in the fresh temp dir
    assert not (ROOT / "pwned_by_answer.txt").exists() and not Path("pwned_by_answer.txt").exists()
    for attack in (f"open({str(ROOT / 'pwned_abs.txt')!r}, 'w').write('x')\n",
                   f"open({str(victim)!r}, 'w').write('gone')\n",
                   f"import os\nos.open({str(victim)!r}, os.O_WRONLY | os.O_TRUNC)\n",
                   f"import os\nos.remove({str(victim)!r})\n",
                   f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
                   "open('../escape.txt', 'w').write('x')\n"):
        out = run(attack + GOOD)
        assert out["code_pass"] is False and out["code_error"] in ("PermissionError", "TypeError"), (attack, out)
    assert victim.read_text() == "keep" and not (ROOT / "pwned_abs.txt").exists()


def test_file_size_limit():
    out = run("open('big', 'wb').write(b'x' * (2 * 2**20))\n" + GOOD, file_size_mb=1)
    assert out["code_pass"] is False and out["code_error"] in ("OSError", "signal:SIGXFSZ")


def test_threads_and_output_cannot_hang_or_flood():
    code = ("import threading, time\ntry:\n    threading.Thread(target=time.sleep, args=(60,)).start()\n"
            "except RuntimeError:\n    pass\nprint('x' * 10**6)\n" + GOOD)
    t0 = time.monotonic()
    assert run(code, timeout_s=3)["code_pass"] is True
    assert time.monotonic() - t0 < 2


def test_hash_seed_is_fixed_for_reproducible_rescoring():
    expected = subprocess.run([sys.executable, "-c", "print(hash('benchbox'))"], capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": "0"}, check=True).stdout.strip()
    assert run(f"assert hash('benchbox') == {expected}\n" + GOOD)["code_pass"] is True


def test_extract_code_prefers_the_block_defining_the_entry_point():
    text = ("Example:\n```python\nprint(add(1, 2))\n```\nImplementation:\n```py\ndef add(a, b):\n"
            "    return a + b\n```\n```bash\npython add.py\n```")
    assert extract_code(text, "add") == "def add(a, b):\n    return a + b\n"
    assert extract_code("```bash\nls\n```", "add") == "```bash\nls\n```"
    assert extract_code(GOOD, "add") == GOOD
    assert run(text)["code_pass"] is True


def test_not_applicable_without_tests():
    assert set(run(GOOD, meta={}).values()) == {None}
    assert set(run(GOOD, meta={"entry_point": "add", "tests": []}).values()) == {None}


def test_real_coding_items_reference_passes_and_is_fast():
    ds = load_dataset(ROOT / "quality" / "coding.jsonl")
    scorer = build_scorer({"name": "code"}, ROOT / "scenarios")
    items = ds.items[:40]
    t0 = time.perf_counter()
    for it in items:
        fenced = f"```python\n{it.reference}```"
        assert scorer.score(ScoreInput(it, fenced, "stop"))["code_pass"] is True, it.id
    assert (time.perf_counter() - t0) / len(items) < 0.1  # ~15 ms per item on a laptop-class CPU
    wrong = scorer.score(ScoreInput(items[0], f"def {items[0].meta['entry_point']}(*a, **k):\n    return 0\n", "stop"))
    assert wrong["code_pass"] is False and wrong["code_error"] == "AssertionError"
