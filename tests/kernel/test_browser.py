"""End-to-end test through a real browser: JupyterLab (from PyPI) serves a
notebook on loopback, Debian's headless Chromium opens it through Playwright,
runs a cell that calls a remote task the way a person would (click, Shift+Enter),
and checks that the result appears in the cell's output. A screenshot is kept
either way, in $RAYREPL_ARTIFACTS (default /tmp/rayrepl-artifacts).

RAYREPL_BROWSER_KERNEL=python3 runs the same path against ipykernel, which
separates a broken browser or server set-up from a broken rayrepl kernel."""

import contextlib
import json
import os
import pathlib
import re
import secrets
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest
from browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, free_port

KERNEL = os.environ.get("RAYREPL_BROWSER_KERNEL", "rayrepl")

# What each kernel runs, and a piece of text its output must contain.
CELLS = {
    "rayrepl": (
        "#[ray::remote]\nfn square(x: i64) -> i64 { x * x }\nsquare.remote(7).await",
        "49",
    ),
    "python3": ("print(6*7)", "42"),
}


# The first rayrepl cell starts a local cluster and a Rust evaluator, which
# can take a minute or more on a cold build cache.
OUTPUT_TIMEOUT_MS = 180_000


@contextlib.contextmanager
def jupyterlab(root: pathlib.Path, home: pathlib.Path):
    """Serve JupyterLab on loopback with a fresh token and private Jupyter
    directories; yield (base URL, token, log path); always stop the server."""
    port, token = free_port(), secrets.token_hex(16)
    log_path = home / "jupyterlab.log"
    # Private config, data and runtime directories keep the user's settings,
    # kernels and workspaces out. JUPYTER_PATH (from conftest) still adds the
    # rayrepl kernelspec, and the venv's own python3 kernelspec is always found.
    config = home / "config"
    # The news plugin's "Would you like to get notified..." toast would cover
    # part of the screenshot; JupyterLab reads disabled plugins from here.
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
    )
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        # Test containers run as root; the server is loopback-only and
        # token-protected.
        "--allow-root",
        # No news feed, update check or PyPI extension search: no requests
        # to the internet.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"JupyterLab did not come up:\n{tail(log_path)}")
                time.sleep(0.5)
        yield base, token, log_path
    finally:
        # SIGTERM lets the server shut its kernels down (and with them
        # rayrepl's local cluster); kill only if it hangs.
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def tail(path: pathlib.Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.mark.timeout(600)
def test_notebook_runs_a_remote_task_in_a_browser(tmp_path: pathlib.Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing; scripts/setup-test-env installs it when run as root")
    from playwright.sync_api import expect, sync_playwright

    source, expected = CELLS[KERNEL]
    root = tmp_path / "notebooks"
    root.mkdir()
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source)],
        # Naming the kernel lets JupyterLab start it without asking.
        metadata={"kernelspec": {"name": KERNEL, "display_name": KERNEL}},
    )
    nbformat.write(notebook, root / "browser.ipynb")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"browser-{KERNEL}.png"

    with jupyterlab(root, tmp_path) as (base, token, log), sync_playwright() as playwright:
        # Without the kernelspec JupyterLab would only pop up a kernel chooser.
        with urllib.request.urlopen(f"{base}/api/kernelspecs?token={token}") as response:
            kernels = json.load(response)["kernelspecs"]
        assert KERNEL in kernels, f"JupyterLab has no {KERNEL!r} kernel, only {sorted(kernels)}"
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # fresh and empty
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        page = browser.new_page()
        try:
            # JupyterLab's bundle is large and the machine may be busy building.
            page.goto(f"{base}/lab/tree/browser.ipynb?token={token}", timeout=120_000)
            cell = page.locator(".jp-NotebookPanel .jp-CodeCell").first
            expect(cell).to_be_visible(timeout=60_000)
            # Wait for the status bar's "<kernel> | Idle": only then is the
            # kernel connected. A cell run before that is silently dropped, and
            # the toolbar's indicator is no help: it reads idle from the start.
            idle = page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\| Idle$"))
            expect(idle).to_be_visible(timeout=120_000)
            cell.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            output = cell.locator(".jp-OutputArea")
            expect(output).to_contain_text(expected, timeout=OUTPUT_TIMEOUT_MS)
            page.screenshot(path=str(screenshot))
            print(f"screenshot: {screenshot}")
        except Exception as error:
            failure = ARTIFACTS / f"browser-{KERNEL}-failure.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(failure))
            raise AssertionError(
                f"{error}\nscreenshot: {failure}\nJupyterLab log:\n{tail(log)}"
            ) from error
        finally:
            browser.close()
