"""Ray 2.60's own clients against a rayrepl head, unchanged: `ray job submit
--working-dir`, `ray job status/logs/stop/list/delete`, `JobSubmissionClient`
(including its log-tail websocket), and `ray list ... --address http://...`.
They find the cluster token as they find Ray's (RAY_AUTH_MODE=token and
RAY_AUTH_TOKEN_PATH). Ray comes from PyPI into its own virtual environment,
made by scripts/setup-ray-env and named by RAYREPL_RAY_VENV."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import pytest
from browser import free_port

RAY_VENV = pathlib.Path(os.environ.get("RAYREPL_RAY_VENV", pathlib.Path.home() / ".cache/rayrepl/ray-2.60.0"))
TIMEOUT = 180


@dataclasses.dataclass
class Cluster:
    url: str
    token_path: pathlib.Path
    head_address: str
    env: dict


@pytest.fixture
def cluster(rayrepl, tmp_path):
    if not (RAY_VENV / "bin" / "ray").exists():
        raise pytest.UsageError(f"Ray 2.60 is not in {RAY_VENV}: run `bash scripts/setup-ray-env`")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYREPL_TOKEN", "RAYREPL_ADDRESS"))}
    env["RAYREPL_TEMP_DIR"] = str(tmp_path / "sessions")
    port = free_port()
    subprocess.run(
        [str(rayrepl), "start", "--head", "--port", "0", "--num-cpus", "2", "--dashboard-port", str(port)],
        env=env, check=True, timeout=TIMEOUT, capture_output=True,
    )
    latest = tmp_path / "sessions" / "session_latest"
    try:
        yield Cluster(
            url=f"http://127.0.0.1:{port}",
            token_path=latest / "token",
            head_address=(latest / "head_address").read_text().strip(),
            env=env,
        )
    finally:
        subprocess.run([str(rayrepl), "stop"], env=env, timeout=TIMEOUT, capture_output=True)


def ray_env(cluster: Cluster, **extra) -> dict:
    return cluster.env | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(cluster.token_path)} | extra


def ray(cluster: Cluster, *args, env=None, check=True) -> subprocess.CompletedProcess:
    """Ray's CLI; stdout and stderr together (Ray logs to both)."""
    done = subprocess.run(
        [str(RAY_VENV / "bin" / "ray"), *args],
        env=env or ray_env(cluster), timeout=TIMEOUT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if check:
        assert done.returncode == 0, done.stdout
    return done


def sdk(cluster: Cluster, code: str) -> dict:
    """Runs `code` under Ray's Python with the dashboard's URL as argv[1]; its last line, as JSON."""
    done = subprocess.run(
        [str(RAY_VENV / "bin" / "python"), "-c", code, cluster.url],
        env=ray_env(cluster), timeout=TIMEOUT, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_rays_job_cli_works_unchanged(cluster, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.txt").write_text("from the working dir\n")
    submitted = ray(
        cluster, "job", "submit", "--address", cluster.url, "--working-dir", str(project),
        "--submission-id", "ray-cli", "--runtime-env-json", '{"env_vars": {"GREETING": "hello"}}',
        "--", "sh", "-c", "cat data.txt; echo $GREETING",
    ).stdout
    assert "from the working dir\nhello\n" in submitted, submitted
    assert "Job 'ray-cli' succeeded" in submitted, submitted
    assert "closed unexpectedly" not in submitted, submitted

    status = ray(cluster, "job", "status", "--address", cluster.url, "ray-cli").stdout
    assert "Job 'ray-cli' succeeded" in status, status
    logs = ray(cluster, "job", "logs", "--address", cluster.url, "ray-cli").stdout
    assert "from the working dir" in logs and "hello" in logs, logs

    ray(cluster, "job", "submit", "--address", cluster.url, "--no-wait", "--submission-id", "sleeper", "--", "sleep", "300")
    stopped = ray(cluster, "job", "stop", "--address", cluster.url, "sleeper").stdout
    assert "Job 'sleeper' was stopped" in stopped, stopped

    listed = ray(cluster, "job", "list", "--address", cluster.url).stdout
    assert "submission_id='ray-cli'" in listed and "SUCCEEDED" in listed, listed
    assert "submission_id='sleeper'" in listed and "STOPPED" in listed, listed
    deleted = ray(cluster, "job", "delete", "--address", cluster.url, "ray-cli").stdout
    assert "Job 'ray-cli' deleted successfully" in deleted, deleted
    assert ray(cluster, "job", "status", "--address", cluster.url, "ray-cli", check=False).returncode != 0


SDK_ROUND_TRIP = """
import asyncio, json, sys, time
from ray.job_submission import JobSubmissionClient, JobStatus

client = JobSubmissionClient(sys.argv[1])
failing = client.submit_job(entrypoint="echo out; exit 3", metadata={"who": "sdk"})
deadline = time.time() + 60
while not client.get_job_status(failing).is_terminal():
    assert time.time() < deadline, "the job never ended"
    time.sleep(0.1)
info = client.get_job_info(failing)

async def tail(job):
    return "".join([chunk async for chunk in client.tail_job_logs(job)])

chatty = client.submit_job(entrypoint="for i in 1 2 3; do echo line $i; sleep 0.2; done", submission_id="chatty")
followed = asyncio.run(tail(chatty))
print(json.dumps({
    "status": str(info.status),
    "exit_code": info.driver_exit_code,
    "message": info.message,
    "metadata": info.metadata,
    "logs": client.get_job_logs(failing),
    "listed": sorted(j.submission_id for j in client.list_jobs()),
    "followed": followed,
    "chatty": str(client.get_job_status(chatty)),
    "stopped_again": client.stop_job(chatty),
    "deleted": client.delete_job(failing),
}))
"""


def test_the_job_submission_client_works_unchanged(cluster):
    got = sdk(cluster, SDK_ROUND_TRIP)
    assert got["status"] == "FAILED" and got["exit_code"] == 3, got
    assert "exit code 3" in got["message"] and got["message"].endswith("out\n"), got
    assert got["metadata"] == {"who": "sdk"}, got
    assert got["logs"] == "out\n", got
    assert "chatty" in got["listed"] and len(got["listed"]) == 2, got
    assert got["followed"] == "line 1\nline 2\nline 3\n", got
    assert got["chatty"] == "SUCCEEDED", got
    assert got["stopped_again"] is False, "an ended job is not stopped again"
    assert got["deleted"] is True, got


def test_rays_state_cli_reads_the_cluster(cluster, rayrepl):
    # Drivers attached to the cluster run a task and a named actor, as the
    # seeds' examples do.
    scenarios = pathlib.Path(rayrepl).parent / "scenarios"
    for scenario in ["attach", "named"]:
        subprocess.run(
            [str(scenarios), scenario], env=cluster.env | {"RAYREPL_ADDRESS": cluster.head_address},
            check=True, timeout=TIMEOUT, capture_output=True,
        )
    nodes = ray(cluster, "list", "nodes", "--address", cluster.url).stdout
    assert "127.0.0.1" in nodes and "ALIVE" in nodes and "Total: 1" in nodes, nodes
    tasks = ray(cluster, "list", "tasks", "--address", cluster.url, "--filter", "name=add").stdout
    assert "FINISHED" in tasks and "Total: 1" in tasks, tasks
    jobs = ray(cluster, "list", "jobs", "--address", cluster.url).stdout
    assert "SUCCEEDED" in jobs and "DRIVER" in jobs, jobs
    actors = ray(cluster, "list", "actors", "--address", cluster.url, "--detail").stdout
    assert "Counter" in actors and "global" in actors, actors
    groups = ray(cluster, "list", "placement-groups", "--address", cluster.url).stdout
    assert "No resource in the cluster" in groups, groups


def test_a_wrong_token_is_refused_as_ray_reports_it(cluster, tmp_path):
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token")
    refused = ray(
        cluster, "job", "list", "--address", cluster.url,
        env=ray_env(cluster, RAY_AUTH_TOKEN_PATH=str(wrong)), check=False,
    )
    assert refused.returncode != 0
    assert "Authentication failed" in refused.stdout and "Invalid authentication token" in refused.stdout, refused.stdout
