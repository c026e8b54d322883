"""Headless Chromium (Debian's package): a page's DOM after its scripts ran, and a screenshot."""

from __future__ import annotations

import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = Path(os.environ.get("HAMI_TEST_ARTIFACTS", REPO / "test-artifacts"))
"""Where tests leave what a person may want to look at (screenshots); ignored by git."""


def _chromium(*args: str, budget_ms: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless=new",
            "--no-sandbox",  # root here; the page is our own, on loopback
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={ARTIFACTS / '.chromium'}",
            f"--virtual-time-budget={budget_ms}",  # lets the page's fetch and timers run
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def dom(url: str, budget_ms: int = 4000) -> str:
    return _chromium("--dump-dom", url, budget_ms=budget_ms).stdout


def screenshot(url: str, name: str, size: str = "1280,1000", budget_ms: int = 4000) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    _chromium(f"--screenshot={path}", f"--window-size={size}", url, budget_ms=budget_ms)
    return path


class Elements(HTMLParser):
    """Every element's attributes, with the data-uuid of the GPU section it sits in."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str | None]] = []
        self.found: list[tuple[dict[str, str | None], str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        gpu = attributes.get("data-uuid") if attributes.get("class") == "gpu" else None
        inside = gpu or (self.stack[-1][1] if self.stack else None)
        self.found.append((attributes, inside))
        if tag not in ("img", "br", "meta", "link", "input", "hr"):
            self.stack.append((tag, inside))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break


def shares_by_gpu(html: str) -> dict[str, set[str]]:
    """GPU uuid -> the allocations drawn as shares on its memory bar."""
    parser = Elements()
    parser.feed(html)
    out: dict[str, set[str]] = {}
    for attributes, gpu in parser.found:
        if attributes.get("class") == "share" and attributes.get("data-allocation") and gpu:
            out.setdefault(gpu, set()).add(str(attributes["data-allocation"]))
    return out
