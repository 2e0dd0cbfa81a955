"""The one way the browser tests start a browser: Debian's Chromium (installed by `make setup`,
scripts/ensure_browser.sh), never a browser a test tool downloads, with the flags this
machine's closed network needs (no background connections, no QUIC)."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
