"""The web dashboard on the head's port, through a real browser: a real cluster
(`rayrepl start --head` in a private RAYREPL_TEMP_DIR), real work (a submitted
job and the walkthrough example's tasks and actor), and Debian's headless
Chromium driven by Playwright through every tab. It checks that the cluster's
own data is on each page, that pages update without a reload (a task timeline
filling while a driver runs, a job submitted while the page is open, its log
followed to the end), and that a browser without the token gets the sign-in
form. Screenshots of each page go to $RAYREPL_ARTIFACTS (default
/tmp/rayrepl-artifacts)."""

import contextlib
import json
import os
import pathlib
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, free_port


# Generous: the machine may be building while the tests run.
STEP_MS = 60_000
COMMAND_TIMEOUT_S = 180


def example(name: str) -> pathlib.Path:
    """A compiled example of the `ray` crate, beside the binary under test."""
    path = pathlib.Path(os.environ["RAYREPL_BIN"]).parent / "examples" / name
    if not path.exists():
        pytest.fail(f"{path} does not exist; run `cargo build --examples -p ray` first")
    return path


class Cluster:
    """A head started in a private temp dir, with what a client needs."""

    def __init__(self, rayrepl: pathlib.Path, root: pathlib.Path) -> None:
        self.rayrepl = rayrepl
        self.env = dict(os.environ, RAYREPL_TEMP_DIR=str(root))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.run("start", "--head", "--port", "0", "--dashboard-port", str(self.port))
        session = root / "session_latest"
        self.token = (session / "token").read_text().strip()
        self.head_address = (session / "head_address").read_text().strip()
        self.logs = session / "logs"

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [str(self.rayrepl), *args], env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
        assert done.returncode == 0, f"rayrepl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def submit(self, submission_id: str, command: str, wait: bool = True) -> str:
        extra = [] if wait else ["--no-wait"]
        return self.run(
            "job", "submit", "--address", self.url, "--submission-id", submission_id, *extra, "--", "sh", "-c", command
        )

    def api(self, path: str) -> object:
        request = urllib.request.Request(self.url + path, headers={"authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def driver(self, program: pathlib.Path) -> subprocess.Popen:
        """Runs `program` as a driver attached to this cluster."""
        env = dict(self.env, RAYREPL_ADDRESS=self.head_address)
        return subprocess.Popen([str(program)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def head_log_tail(self) -> str:
        texts = []
        for name in ("head.err", "node.err"):
            with contextlib.suppress(OSError):
                texts.append(f"--- {name}\n" + "\n".join((self.logs / name).read_text().splitlines()[-30:]))
        return "\n".join(texts)


@pytest.fixture
def cluster(rayrepl: pathlib.Path, tmp_path: pathlib.Path):
    root = tmp_path / "rayrepl"
    root.mkdir()
    c = None
    try:
        c = Cluster(rayrepl, root)
        yield c
    finally:
        # Stops what this temp dir's `start` started, whatever happened.
        subprocess.run(
            [str(rayrepl), "stop"], env=dict(os.environ, RAYREPL_TEMP_DIR=str(root)), capture_output=True, timeout=60
        )


def finish(driver: subprocess.Popen) -> str:
    try:
        out, _ = driver.communicate(timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        driver.kill()
        out, _ = driver.communicate()
        raise AssertionError(f"the driver did not finish:\n{out}")
    assert driver.returncode == 0, f"the driver failed:\n{out}"
    return out


def read_until(process: subprocess.Popen, text: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
    """The output of `process` up to the line containing `text`."""
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen:
        try:
            seen += lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise AssertionError(f"no {text!r} from the driver in {timeout} s:\n{seen}") from None
    return seen


@pytest.mark.timeout(900)
def test_dashboard_shows_the_live_cluster_in_a_browser(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing; scripts/setup-test-env installs it when run as root")
    from playwright.sync_api import expect, sync_playwright

    walkthrough = example("walkthrough")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "dashboard-failure.png").unlink(missing_ok=True)  # from an earlier run

    # Without the token, the page is refused with the sign-in form.
    request = urllib.request.Request(cluster.url + "/", headers={"accept": "text/html"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401
    assert 'name="token"' in refused.value.read().decode()

    cluster.submit("dash-demo", "echo hello-from-the-job")
    node = cluster.api("/api/v0/nodes")["data"]["result"]["result"][0]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # fresh and empty
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
        )
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        driver = None
        try:
            # A browser without the cookie gets the sign-in form too.
            response = page.goto(cluster.url + "/", timeout=STEP_MS)
            assert response is not None and response.status == 401
            expect(page.locator("input[name=token]")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "dashboard-sign-in.png"))

            # The ?token= link signs in and lands on the dashboard.
            page.goto(f"{cluster.url}/?token={cluster.token}", timeout=STEP_MS)
            assert "token=" not in page.url
            expect(page.locator("#live-text")).to_have_text("live", timeout=STEP_MS)
            # Set once; a reload would lose it.
            page.evaluate("window.__notReloaded = true")

            # Overview: the node, with its id, IP and usage bars, and the job.
            nodes = page.locator("#nodes-table")
            expect(nodes).to_contain_text(node["node_id"][:12], timeout=STEP_MS)
            expect(nodes).to_contain_text(node["node_ip"])
            expect(nodes).to_contain_text("ALIVE")
            expect(nodes.locator(".bar")).to_have_count(3)
            expect(page.locator("#overview-jobs-table")).to_contain_text("dash-demo")
            page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

            # Tasks: a driver started with the page open fills the timeline live.
            page.click("#tabs a[data-tab=tasks]")
            driver = cluster.driver(walkthrough)
            expect(page.locator("#timeline rect.task").first).to_be_attached(timeout=STEP_MS)
            names = page.locator("#task-names-table")
            expect(names).to_contain_text("retrieve_task", timeout=STEP_MS)
            finish(driver)
            expect(names).to_contain_text("DataTracker.increment", timeout=STEP_MS)
            expect(page.locator("#tasks-table")).to_contain_text("FINISHED")
            page.fill("#task-filter", "follow_up")
            expect(page.locator("#tasks-table tbody tr").first).to_contain_text("follow_up_task")
            assert "retrieve_from_db" not in page.locator("#tasks-table tbody").inner_text()
            page.fill("#task-filter", "")
            page.screenshot(path=str(ARTIFACTS / "dashboard-tasks.png"), full_page=True)

            # Actors: the walkthrough's tracker.
            page.click("#tabs a[data-tab=actors]")
            expect(page.locator("#actors-table")).to_contain_text("DataTracker", timeout=STEP_MS)
            page.screenshot(path=str(ARTIFACTS / "dashboard-actors.png"), full_page=True)

            # Jobs: the submitted job and its log.
            page.click("#tabs a[data-tab=jobs]")
            jobs = page.locator("#jobs-table")
            expect(jobs).to_contain_text("dash-demo", timeout=STEP_MS)
            expect(jobs).to_contain_text("walkthrough")  # the driver, as a DRIVER job
            jobs.locator("tr", has_text="dash-demo").click()
            expect(page.locator("#job-log")).to_contain_text("hello-from-the-job", timeout=STEP_MS)

            # A job submitted while the page is open appears, and its log is
            # followed as it is written, to the end.
            cluster.submit("dash-live", "echo live-start; sleep 3; echo live-end", wait=False)
            expect(jobs).to_contain_text("dash-live", timeout=STEP_MS)
            jobs.locator("tr", has_text="dash-live").click()
            expect(page.locator("#job-log")).to_contain_text("live-start", timeout=STEP_MS)
            expect(page.locator("#job-log")).to_contain_text("live-end", timeout=STEP_MS)
            expect(page.locator("#job-detail .badge")).to_have_text("SUCCEEDED", timeout=STEP_MS)
            page.screenshot(path=str(ARTIFACTS / "dashboard-jobs.png"), full_page=True)

            # Logs: the head node's files, through Ray's log API.
            page.click("#tabs a[data-tab=logs]")
            expect(page.locator("#log-nodes")).to_contain_text(node["node_ip"], timeout=STEP_MS)
            files = page.locator("#log-files")
            expect(files).to_contain_text("job-driver-dash-demo.log", timeout=STEP_MS)
            expect(files).to_contain_text("node.err")
            files.locator("a", has_text="job-driver-dash-demo.log").click()
            expect(page.locator("#log-view")).to_contain_text("hello-from-the-job", timeout=STEP_MS)
            page.screenshot(path=str(ARTIFACTS / "dashboard-logs.png"), full_page=True)

            # Placement groups: the tab shows only once one exists. The tests
            # crate's scenario binary makes one, when it has been built.
            expect(page.locator("#tab-pgs")).to_be_hidden()
            scenarios = pathlib.Path(os.environ["RAYREPL_BIN"]).parent / "scenarios"
            if scenarios.exists():
                # A group that needs a resource no node has stays pending
                # while its driver waits for a line on stdin.
                driver = subprocess.Popen(
                    [str(scenarios), "pg_pending_then_node"],
                    env=dict(cluster.env, RAYREPL_ADDRESS=cluster.head_address),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                read_until(driver, "add_node")
                expect(page.locator("#tab-pgs")).to_be_visible(timeout=STEP_MS)
                page.click("#tab-pgs")
                groups = page.locator("#pgs-table")
                expect(groups).to_contain_text("PENDING", timeout=STEP_MS)
                expect(groups).to_contain_text("infeasible")
                expect(groups).to_contain_text("d 1")
                page.screenshot(path=str(ARTIFACTS / "dashboard-placement-groups.png"), full_page=True)

            assert page.evaluate("window.__notReloaded") is True, "the page was reloaded"
            assert not errors, f"the page raised: {errors}"
        except Exception as error:
            failure = ARTIFACTS / "dashboard-failure.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(failure), full_page=True)
            raise AssertionError(f"{error}\nscreenshot: {failure}\n{cluster.head_log_tail()}") from error
        finally:
            if driver is not None and driver.poll() is None:
                driver.kill()
                driver.wait()
            browser.close()
