"""What the browser tests share: Debian's Chromium as Playwright drives it, where
screenshots go, and a free loopback port for the servers they start."""

import os
import pathlib
import socket

CHROMIUM = pathlib.Path("/usr/bin/chromium")
# Playwright adds --headless. No sandbox: the container is one, and Chromium's
# needs user namespaces. The rest stop Chromium's own traffic, which on this
# closed network would only be refused, over and over.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

ARTIFACTS = pathlib.Path(os.environ.get("RAYREPL_ARTIFACTS", "/tmp/rayrepl-artifacts"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
