"""The run report and the run index render in a real browser (headless Chromium), offline.

Builds a successful run, a run that failed at the privacy-zone gate and the index from fixture
stage results, then has Chromium screenshot each page (size right, not blank, the failure banner
visibly red) and dump its DOM (banner and section headings there). Chromium is required: without
it this test fails and says how to install it (``scripts/ensure_chromium.sh``, run by ``make test``).
Set ``CRMSHIELD_REPORT_SCREENSHOTS=/some/dir`` to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest
from report_fixtures import RUN_FAILED, RUN_OK, build_both

from crmshield.config import Settings

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 1280, 2400
INSTALL_HINT = (
    "headless Chromium is required to check that the run report renders, and none was found "
    "(looked at $CRMSHIELD_CHROMIUM, then `chromium` and `chromium-browser` on PATH). Install it with "
    "`bash scripts/ensure_chromium.sh` (as root: apt-get install -y --no-install-recommends chromium; "
    "`make test` runs it), or set CRMSHIELD_CHROMIUM=/path/to/chromium"
)
# page colours from templates/_style.css.j2
BANNER_BG = (0xFE, 0xF3, 0xF2)  # .banner background (also .badge.failed)
BANNER_BORDER = (0xD9, 0x2D, 0x20)  # .banner border, failed stage chip
OK_BG = (0xEC, 0xFD, 0xF3)  # .badge / passed stage chips


def chromium() -> str:
    env = os.environ.get("CRMSHIELD_CHROMIUM")
    if env:
        if not (Path(env).is_file() and os.access(env, os.X_OK)):
            pytest.fail(f"CRMSHIELD_CHROMIUM={env} is not an executable file. {INSTALL_HINT}", pytrace=False)
        return env
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(INSTALL_HINT, pytrace=False)


def _run_chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        *extra,
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc


def decode_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """(width, height, rows of RGB(A) bytes, bytes per pixel) of an 8-bit, non-interlaced RGB/RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = bpp = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    assert len(raw) == height * (stride + 1), "truncated image data"
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, cur = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                cur[i] = (cur[i] + cur[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            cur = bytearray((a + b) & 0xFF for a, b in zip(cur, prev, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = cur[i - bpp] if i >= bpp else 0
                cur[i] = (cur[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a, c = (cur[i - bpp], prev[i - bpp]) if i >= bpp else (0, 0)
                b = prev[i]
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        else:
            assert kind == 0, f"unknown PNG filter {kind}"
        rows.append(bytes(cur))
        prev = cur
    return width, height, rows, bpp


def colour_counts(rows: list[bytes], bpp: int) -> Counter[tuple[int, int, int]]:
    counts: Counter[tuple[int, int, int]] = Counter()
    for row in rows:
        counts.update(zip(row[0::bpp], row[1::bpp], row[2::bpp], strict=True))
    return counts


def near(counts: Counter[tuple[int, int, int]], rgb: tuple[int, int, int], tol: int = 3) -> int:
    return sum(n for c, n in counts.items() if all(abs(x - y) <= tol for x, y in zip(c, rgb, strict=True)))


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    settings = Settings.from_env(tmp_path_factory.mktemp("report_render") / "data")
    ok, failed = build_both(settings)
    return {"success": ok.with_name("report.html"), "failed": failed.with_name("report.html"),
            "index": settings.runs / "index.html"}  # fmt: skip


def _screenshot(name: str, page: Path, tmp_path: Path) -> tuple[bytes, Counter[tuple[int, int, int]], int]:
    png = tmp_path / f"{name}.png"
    _run_chromium(page, tmp_path / "profile", f"--screenshot={png}")
    assert png.is_file() and png.stat().st_size > 0, "chromium wrote no screenshot"
    keep = os.environ.get("CRMSHIELD_REPORT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, Path(keep) / png.name)
    data = png.read_bytes()
    width, height, rows, bpp = decode_png(data)
    assert (width, height) == (WIDTH, HEIGHT), f"screenshot is {width}x{height}, not {WIDTH}x{HEIGHT}"
    counts = colour_counts(rows, bpp)
    background, bg_pixels = counts.most_common(1)[0]
    assert background == (255, 255, 255), f"page background is {background}, expected white"
    inked = WIDTH * HEIGHT - bg_pixels
    return data, counts, inked


def _dom(page: Path, tmp_path: Path) -> str:
    dom = _run_chromium(page, tmp_path / "profile-dom", "--dump-dom").stdout
    assert "</html>" in dom.lower(), "chromium returned no DOM"
    return dom


def test_success_report_renders(pages, tmp_path):
    _, counts, inked = _screenshot("report_success", pages["success"], tmp_path)
    assert inked > 0.05 * WIDTH * HEIGHT, f"only {inked} non-white pixels: the page looks blank"
    assert len(counts) > 100, "too few colours for a page of tables and text"
    assert near(counts, OK_BG) > 2000, "green status chips are visible"
    assert near(counts, BANNER_BG) < 200, "no failure banner on a successful run"
    dom = _dom(pages["success"], tmp_path)
    assert 'id="run-status">success<' in dom and 'id="failure"' not in dom
    for heading in ("What came in", "Minimization", "k-anonymity and re-identification risk", "Validation suites",
                    "What was published", "Privacy budget over time"):  # fmt: skip
        assert heading in dom, heading
    assert dom.count("<svg") == 2 and dom.count("<rect") >= 7, "histogram and budget chart rendered as inline SVG"


def test_failed_report_renders_with_banner(pages, tmp_path):
    _, counts, inked = _screenshot("report_failed", pages["failed"], tmp_path)
    assert inked > 0.05 * WIDTH * HEIGHT, f"only {inked} non-white pixels: the page looks blank"
    assert near(counts, BANNER_BG) > 100_000, "the failure banner's red background is on screen"
    assert near(counts, BANNER_BORDER, tol=6) > 1500, "the banner's red border is on screen"
    dom = _dom(pages["failed"], tmp_path)
    assert 'id="failure"' in dom and 'id="run-status">failed<' in dom
    assert "Run FAILED at stage <code>validate</code> — privacy zone" in dom
    assert "no_direct_identifiers" in dom and "no_email_in_text" in dom
    assert "nothing was published by this run" in dom and RUN_OK in dom
    assert dom.count('class="notrun"') >= 2, "transform and publish sections say 'not run'"
    assert "k-anonymity and re-identification risk" in dom, "sections with data are still rendered"


def test_index_renders(pages, tmp_path):
    _, counts, inked = _screenshot("index", pages["index"], tmp_path)
    assert inked > 5000, f"only {inked} non-white pixels: the index looks blank"
    assert near(counts, BANNER_BG) > 300 and near(counts, OK_BG) > 300, "a failed and a successful status badge"
    dom = _dom(pages["index"], tmp_path)
    assert dom.index(RUN_FAILED) < dom.index(RUN_OK), "newest first"
    assert f'href="{RUN_OK}/report.html"' in dom and f'href="{RUN_FAILED}/report.html"' in dom
