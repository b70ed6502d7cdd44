"""The HTML report in a real browser: headless Chromium renders it offline to a non-blank PNG."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Optional

import pytest

from bench.report.html import write_report
from tests.unit.test_report_html import synthetic_run

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 1400, 3000


def find_chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def screenshot(chromium: str, page: Path, png: Path, profile: Path) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={png}",
           page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, timeout=180, check=False)


def png_pixels(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, the decompressed scanlines) of an 8-bit non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None, "no IHDR"
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0, header
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    return width, height, bpp, zlib.decompress(idat)


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium not found (apt-get install -y chromium): cannot render the report in a browser")
    run = synthetic_run(tmp_path / "run")
    page = write_report(run)
    png = run / "report.png"
    done = screenshot(chromium, page, png, tmp_path / "profile")
    why = done.stderr.decode(errors="replace")[-2000:]
    assert png.exists(), f"no screenshot (exit {done.returncode}): {why}"
    data = png.read_bytes()
    # A blank 1400x3000 page compresses to ~15 kB; charts, tables and text make it several times that.
    assert len(data) > 50_000, len(data)
    width, height, bpp, raw = png_pixels(data)
    assert (width, height) == (WIDTH, HEIGHT)
    assert len(raw) == height * (1 + width * bpp)
    rows = [raw[y * (1 + width * bpp) + 1:(y + 1) * (1 + width * bpp)] for y in range(0, height, 50)]
    assert len(set(raw)) > 50, "too few distinct byte values: the page looks blank"
    assert len(set(rows)) > len(rows) // 3, "most sampled rows are identical: the page looks blank"
