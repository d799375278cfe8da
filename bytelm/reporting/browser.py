"""Headless Chromium, for looking at the run report as a reader would: its rendered DOM and a screenshot.

Chromium runs with a fresh profile and with its background networking off: the page is one local
file, and on an offline machine Chromium's own calls home would only fail and slow it down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bytelm.errors import BytelmError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",  # as root (containers, CI) Chromium refuses to start with its sandbox
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
)
TIMEOUT_S = 120


class BrowserError(BytelmError):
    """Chromium is missing or failed to render the page."""


def find_chromium() -> str | None:
    """The path of a Chromium binary ($BYTELM_CHROMIUM first), or None."""
    if os.environ.get("BYTELM_CHROMIUM"):
        return shutil.which(os.environ["BYTELM_CHROMIUM"])
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def _run(page: Path, extra: list[str]) -> subprocess.CompletedProcess:
    binary = find_chromium()
    if binary is None:
        raise BrowserError("no Chromium found: install Debian's chromium package (or set $BYTELM_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="bytelm-chromium-") as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *extra, Path(page).resolve().as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"Chromium did not finish rendering {page} within {TIMEOUT_S} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise BrowserError(f"Chromium failed on {page} (exit {proc.returncode}): {last}")
    return proc


def rendered_dom(page: str | os.PathLike) -> str:
    """The page's DOM after Chromium has parsed and laid it out, as HTML text."""
    return _run(Path(page), ["--dump-dom"]).stdout.decode("utf-8", errors="replace")


def screenshot(page: str | os.PathLike, out: str | os.PathLike, width: int = 1280, height: int = 2400) -> None:
    """A PNG of the page at `width`×`height` pixels, written to `out` atomically."""
    out = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        _run(Path(page), [f"--screenshot={tmp}", f"--window-size={width},{height}", "--hide-scrollbars"])
        if os.path.getsize(tmp) == 0:
            raise BrowserError(f"Chromium wrote an empty screenshot of {page}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
