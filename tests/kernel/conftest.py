"""Shared set-up for the kernel tests: the real `rayrepl` binary, its kernelspec
installed with `rayrepl kernel install --prefix` into a private directory, and
JUPYTER_PATH pointing there, so the tests never touch the user's Jupyter (nor the
kernel history in the user's data directory)."""

import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def rayrepl_binary() -> pathlib.Path:
    if "RAYREPL_BIN" in os.environ:
        return pathlib.Path(os.environ["RAYREPL_BIN"])
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / "rayrepl"


def pytest_configure(config: pytest.Config) -> None:
    binary = rayrepl_binary()
    if not binary.exists():
        raise pytest.UsageError(f"{binary} does not exist; run `cargo build -p rayrepl` first")
    prefix = pathlib.Path(tempfile.mkdtemp(prefix="rayrepl-kernelspec-"))
    config.add_cleanup(lambda: shutil.rmtree(prefix, ignore_errors=True))
    subprocess.run([str(binary), "kernel", "install", "--prefix", str(prefix)], check=True)
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    # Kernels started by the tests keep their history here, not in the user's.
    os.environ["RAYREPL_KERNEL_HISTORY"] = str(prefix / "kernel-history.jsonl")
    os.environ["RAYREPL_BIN"] = str(binary)


@pytest.fixture(scope="session")
def rayrepl() -> pathlib.Path:
    """The `rayrepl` binary under test."""
    return rayrepl_binary()
