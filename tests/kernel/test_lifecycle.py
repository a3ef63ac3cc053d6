"""What the conformance suite does not cover: the kernel as a Ray driver.

Live progress as display_data updated in place, worker output with its
`(name pid=N)` prefix, rich reprs, an interrupt that cancels a cell's tasks and
keeps the variables, restart and shutdown that leave no cluster process behind,
and attaching to a running cluster through RAYREPL_ADDRESS. Each test drives a
real kernel through jupyter_client, as a notebook front-end does."""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import pytest
from jupyter_client.manager import KernelManager

FIRST_CELL_TIMEOUT = 600
CELL_TIMEOUT = 120


class Kernel:
    """A started rayrepl kernel with a blocking client."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.km = KernelManager(kernel_name="rayrepl")
        self.km.start_kernel(env={**os.environ, **(env or {})})
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.run("1", timeout=FIRST_CELL_TIMEOUT)

    def run(
        self,
        code: str,
        timeout: float = CELL_TIMEOUT,
        interrupt_after: float | None = None,
        interrupt_once: str | None = None,
    ):
        """Executes `code`; returns the reply content and the cell's IOPub messages.
        With `interrupt_once`, the interrupt waits until the cell's output shows that
        text: compiling a cell can take longer than `interrupt_after` on a busy machine."""
        msg_id = self.kc.execute(code)
        outputs = []
        if interrupt_once is not None:
            while True:
                msg = self.kc.get_iopub_msg(timeout=timeout)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] not in ("status", "execute_input"):
                    outputs.append(msg)
                if msg["msg_type"] == "stream" and interrupt_once in msg["content"]["text"]:
                    break
        if interrupt_after is not None:
            time.sleep(interrupt_after)
            self.km.interrupt_kernel()
        reply = self.kc.get_shell_msg(timeout=timeout)
        assert reply["parent_header"]["msg_id"] == msg_id
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
            if msg["msg_type"] not in ("status", "execute_input"):
                outputs.append(msg)
        return reply["content"], outputs

    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel()


def stdout_text(outputs) -> str:
    return "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")


def stderr_text(outputs) -> str:
    return "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")


def result_text(outputs) -> str:
    results = [m["content"]["data"] for m in outputs if m["msg_type"] == "execute_result"]
    assert len(results) == 1, outputs
    return results[0].get("text/plain", "")


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (cluster daemons, workers, the evaluator)."""
    children: dict[int, list[int]] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    def running(pid: int) -> bool:
        try:
            state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    return {p for p in pids if running(p)}


def wait_gone(pids: set[int], seconds: float = 20) -> set[int]:
    deadline = time.time() + seconds
    while alive(pids) and time.time() < deadline:
        time.sleep(0.1)
    return alive(pids)


@pytest.fixture(scope="module")
def kernel():
    k = Kernel()
    yield k
    k.stop()


SLOW_TASK = """#[ray::remote]
fn slow(i: u64) -> u64 {
    println!("working on {i}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    i
}"""


def test_progress_is_a_display_updated_in_place_and_worker_output_streams(kernel):
    reply, _ = kernel.run(SLOW_TASK)
    assert reply["status"] == "ok", reply
    reply, outputs = kernel.run("ray::get(&(0..6).map(|i| slow.remote(i)).collect::<Vec<_>>())?.iter().sum::<u64>()")
    assert reply["status"] == "ok", reply
    assert result_text(outputs) == "15"
    shown = [m for m in outputs if m["msg_type"] == "display_data"]
    assert len(shown) == 1, [m["msg_type"] for m in outputs]
    display_id = shown[0]["content"]["transient"]["display_id"]
    updates = [m for m in outputs if m["msg_type"] == "update_display_data"]
    assert updates and all(u["content"]["transient"]["display_id"] == display_id for u in updates)
    for m in shown + updates:
        assert {"text/plain", "text/html"} <= set(m["content"]["data"]), m["content"]["data"].keys()
    final = updates[-1]["content"]["data"]["text/plain"]
    assert "6/6 done" in final and "finished in" in final, final
    out = stdout_text(outputs)
    for i in range(6):
        assert f"(slow pid=" in out and f"working on {i}" in out, out


CHATTY = """#[ray::remote]
fn chatty(i: u64) -> u64 {
    for k in 0..300 {
        println!("chatty {i} line {k}");
    }
    i
}
#[ray::remote]
fn outer() -> u64 {
    println!("outer starts");
    ray::get(&chatty.remote(9)).unwrap()
}
#[ray::remote]
struct Talker;
#[ray::remote]
impl Talker {
    fn new() -> Self { Talker }
    fn say(&self, n: u64) -> u64 { println!("talker says {n}"); n }
}"""


def test_worker_output_comes_before_the_cells_result(kernel):
    """Lines printed by tasks, a nested task and an actor method all arrive
    before the execute_result of the cell that waited for them."""
    reply, _ = kernel.run(CHATTY)
    assert reply["status"] == "ok", reply
    for attempt in range(3):
        reply, outputs = kernel.run(
            "let talker = Talker::remote()?;\n"
            "let mine: Vec<u64> = ray::get(&(0..4).map(|i| chatty.remote(i)).collect::<Vec<_>>())?;\n"
            "let nested = ray::get(&outer.remote())?;\n"
            "let said = ray::get(&talker.say(7))?;\n"
            'format!("result: {mine:?} {nested} {said}")'
        )
        assert reply["status"] == "ok", reply
        kinds = [m["msg_type"] for m in outputs]
        assert kinds.count("execute_result") == 1, kinds
        at = kinds.index("execute_result")
        assert "result: [0, 1, 2, 3] 9 7" in result_text(outputs)
        before = stdout_text(outputs[:at])
        after = stdout_text(outputs[at + 1 :])
        assert before.count(") chatty ") == 5 * 300, (attempt, before.count(") chatty "), after[:300])
        # Each line names the task that printed it, the nested one too.
        assert "(chatty pid=" in before and "(outer pid=" in before and "(Talker pid=" in before, before[-500:]
        for line in before.splitlines():
            assert not line.startswith("(outer pid=") or line.endswith("outer starts"), line
        assert "outer starts" in before and "talker says 7" in before, (attempt, after)
        assert not after.strip(), (attempt, after[:300])


def test_inspect_and_completion_cover_std(kernel):
    """Shift-Tab on std items gives their signature and docs, read from the
    toolchain's rust-src, as rust-analyzer's hover does; completion knows std."""

    def inspect(code: str) -> dict:
        reply = kernel.kc.inspect(code, cursor_pos=len(code), reply=True, timeout=60)
        return reply["content"]

    for code, expected in [
        ("Vec", "A contiguous growable array type"),
        ("let m = HashMap::insert", "Inserts a key-value pair into the map"),
        ("Iterator::map", "Takes a closure and creates an iterator"),
        ("println!", "Prints to the standard output"),
    ]:
        content = inspect(code)
        assert content["status"] == "ok" and content["found"], (code, content)
        assert expected in content["data"]["text/plain"], (code, content["data"]["text/plain"][:500])
    reply, _ = kernel.run("let mut counts = std::collections::HashMap::<String, u32>::new();")
    assert reply["status"] == "ok", reply
    content = inspect("counts.insert")
    assert content["found"], content
    assert "Inserts a key-value pair" in content["data"]["text/markdown"], content["data"]
    assert not inspect("no_such_name_anywhere")["found"]

    for code, expected in [("let v: Vec<u8> = Vec::with_cap", "with_capacity"), ("std::collections::Hash", "HashMap")]:
        reply = kernel.kc.complete(code, cursor_pos=len(code), reply=True, timeout=60)
        matches = reply["content"]["matches"]
        assert any(m.startswith(expected) for m in matches), (code, matches[:20])


def test_timeline_draws_the_tasks_that_ran_on_their_workers(kernel):
    reply, _ = kernel.run("#[ray::remote]\nfn tick(i: u64) -> u64 { i }")
    assert reply["status"] == "ok", reply
    reply, _ = kernel.run("ray::get(&(0..4).map(|i| tick.remote(i)).collect::<Vec<_>>())?.len()")
    assert reply["status"] == "ok", reply
    time.sleep(1)  # task events reach the head every 200 ms
    reply, outputs = kernel.run(":timeline")
    assert reply["status"] == "ok", reply
    shown = [m["content"]["data"] for m in outputs if m["msg_type"] == "display_data"]
    assert len(shown) == 1, outputs
    html, plain = shown[0]["text/html"], shown[0]["text/plain"]
    assert "<svg" in html and html.count("<title>tick · ") == 4, html
    assert "tasks on" in plain and "tick: 4" in plain, plain


def test_rich_reprs_of_refs_actors_and_the_context(kernel):
    _, outputs = kernel.run("ray::init()")
    data = [m["content"]["data"] for m in outputs if m["msg_type"] == "execute_result"][0]
    assert "Ray cluster (rayrepl)" in data["text/html"] and "CPUs" in data["text/html"], data
    assert "Address" in data["text/plain"], data
    _, outputs = kernel.run("ray::put(&7u32)?")
    assert result_text(outputs).startswith("ObjectRef("), outputs
    reply, _ = kernel.run(
        "#[ray::remote]\nstruct Counter { n: u64 }\n#[ray::remote]\nimpl Counter {\n"
        "    fn new() -> Self { Counter { n: 0 } }\n    fn bump(&mut self) -> u64 { self.n += 1; self.n }\n}"
    )
    assert reply["status"] == "ok", reply
    _, outputs = kernel.run("let counter = Counter::remote()?; counter.clone()")
    assert result_text(outputs).startswith("Actor(Counter, "), outputs
    _, outputs = kernel.run("counter.bump().await?")
    assert result_text(outputs) == "1"


def test_an_error_returned_with_question_mark_fails_the_cell(kernel):
    kernel.run('#[ray::remote]\nfn broken(x: u32) -> u32 { if x > 0 { panic!("bad input {x}") } x }')
    reply, outputs = kernel.run("ray::get(&broken.remote(3))?")
    assert reply["status"] == "error", reply
    errors = [m["content"] for m in outputs if m["msg_type"] == "error"]
    assert len(errors) == 1 and "bad input 3" in stderr_text(outputs) + errors[0]["evalue"], outputs


def test_interrupt_cancels_the_tasks_and_keeps_the_variables(kernel):
    kernel.run(SLOW_TASK)
    kernel.run("let keep = 41;")
    reply, outputs = kernel.run(
        "ray::get(&(0..40).map(|i| slow.remote(i)).collect::<Vec<_>>())?.len()",
        interrupt_once="working on",
        interrupt_after=1.0,
    )
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    note = stderr_text(outputs)
    cancelled = int(note.split("cancelled ")[1].split()[0])
    assert cancelled > 0, note
    reply, outputs = kernel.run("keep + 1")
    assert reply["status"] == "ok" and result_text(outputs) == "42"


def test_restart_and_shutdown_leave_no_cluster_process_behind():
    k = Kernel()
    try:
        k.run(SLOW_TASK)
        k.run("ray::get(&slow.remote(1))?")
        first = descendants(k.pid())
        assert len(first) >= 3, first  # head, node daemon, evaluator (and workers)
        k.km.restart_kernel(now=False)
        k.kc.wait_for_ready(timeout=60)
        assert not wait_gone(first), f"left behind by restart: {alive(first)}"
        reply, outputs = k.run("2 + 2", timeout=FIRST_CELL_TIMEOUT)
        assert reply["status"] == "ok" and result_text(outputs) == "4"
        second = descendants(k.pid()) | {k.pid()}
    finally:
        k.stop()
    assert not wait_gone(second), f"left behind by shutdown: {alive(second)}"


def test_attaches_to_the_cluster_in_rayrepl_address(rayrepl):
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "RAYREPL_TEMP_DIR": root}
        env.pop("RAYREPL_ADDRESS", None)
        started = subprocess.run(
            [str(rayrepl), "start", "--head", "--port", "0", "--num-cpus", "1"], env=env, capture_output=True, timeout=60
        )
        assert started.returncode == 0, started.stderr
        address = (pathlib.Path(root) / "session_latest" / "head_address").read_text().strip()
        try:
            k = Kernel(env={"RAYREPL_ADDRESS": address, "RAYREPL_TEMP_DIR": root})
            try:
                _, outputs = k.run("ray::runtime_context()?.address")
                assert result_text(outputs) == f'"{address}"'
                _, outputs = k.run("ray::runtime_context()?.cpus")
                assert result_text(outputs) == "1.0"
            finally:
                k.stop()
            # The kernel leaves a cluster it did not start running.
            status = subprocess.run([str(rayrepl), "status", "--address", address], env=env, capture_output=True, timeout=60)
            assert status.returncode == 0 and b"Active:" in status.stdout, status
        finally:
            subprocess.run([str(rayrepl), "stop"], env=env, capture_output=True, timeout=60)


def test_kernel_install_writes_a_spec_jupyter_lists(rayrepl, tmp_path):
    # conftest installed with --prefix and put that prefix on JUPYTER_PATH.
    listed = subprocess.run(
        [sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"], capture_output=True, text=True, check=True
    )
    spec = json.loads(listed.stdout)["kernelspecs"]["rayrepl"]["spec"]
    assert spec["display_name"] == "Rust (rayrepl)" and spec["language"] == "rust", spec
    assert spec["argv"][0] == str(rayrepl.resolve()) and spec["interrupt_mode"] == "message", spec
    # --sys-prefix installs into the active environment, --user into Jupyter's data directory.
    env = {**os.environ, "VIRTUAL_ENV": str(tmp_path / "venv"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    for flag, where in [("--sys-prefix", "venv/share/jupyter/kernels"), ("--user", "data/kernels")]:
        subprocess.run([str(rayrepl), "kernel", "install", flag], env=env, check=True, capture_output=True)
        kernel_dir = tmp_path / where / "rayrepl"
        assert json.loads((kernel_dir / "kernel.json").read_text())["display_name"] == "Rust (rayrepl)"
        assert (kernel_dir / "logo-64x64.png").read_bytes().startswith(b"\x89PNG")
