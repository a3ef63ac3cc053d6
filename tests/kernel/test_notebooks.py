"""The tutorial notebooks in notebooks/, executed on the rayrepl kernel as CI runs them.

Each notebook runs top to bottom with nbclient (what `jupyter nbconvert --execute`
uses), on the kernel its metadata names, in a copy under pytest's temporary
directory: the committed notebooks keep the outputs they were saved with. A notebook
fails if any cell raises (a compile error, a panic, a `?` that returns an error),
writes to stderr where it should not, or lacks the values the tutorial promises, so a
kernel that runs every cell but computes or shows the wrong thing fails too. The
progress displays are checked on their own: they must end in the cell that made them,
in their final state, since that is what a saved notebook keeps.
"""

import pathlib
import re
import time

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))

# Per cell. The first cell waits for the kernel's evaluator, which on a cold machine
# first builds the `ray` crate for cells (a minute or two on 2 cores).
CELL_TIMEOUT = 300

# What each tutorial's outputs must show: literal text, or a compiled pattern, found
# in the cells' text (stdout, stderr and the text/plain of results and displays).
# Values are the seeds' own where the seeds give them.
EXPECTED = {
    "01-ray-core-walkthrough.ipynb": [
        '(7, "Learning")',
        '(3, "Distributed")',  # retrieve_task.remote(3).await?
        "ObjectRef(",
        # Task dependencies: each follow-up got its lookup's value.
        '((0, "Learning"), (1, "Ray"))',
        '((6, "Machine"), (7, "Learning"))',
        # The DataTracker actor, called from eight tasks.
        '[(0, "Learning"), (1, "Ray"), (2, "Flexible"), (3, "Distributed"), '
        '(4, "Python"), (5, "for"), (6, "Machine"), (7, "Learning")]\n8\n',
        "Actor(DataTracker, ",
    ],
    "02-tasks.ipynb": [
        "Results: [3, 7, 11]",
        "[0, 1, 4, 9]",
        "(example_function pid=",
        "result:  [1, 1, 1, 1]",
        "hi there!\nhi there!\nhi there!\n",
        "no node in the cluster has that much",
        "`checked_sqrt` failed: cannot take the square root of -4",
    ],
    "03-actors.ipynb": [
        "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n[2, 3, 4, 5, 6]\n[6, 1, 1, 1, 1, 1, 1, 1, 1, 1]",
        "10 counters in 10 distinct worker processes",
        "Actor(Counter, ",
        # Four 0.5 s calls on an async actor overlap (one by one they take 2 s).
        re.compile(r"4 calls took (0\.\d|1\.[0-4]) s"),
        "I'm running in another thread!",
        "finished before the signal: 0",
        re.compile(r"(go!\n.*){3}go!", re.S),
        "consumed [0, 1], 8 items left in the queue",
        "no node in the cluster has that much",
        "It stays PENDING_CREATION until a node that has it joins",
        "answered within a second: false",
        "killed by ray::kill",
        "new process: true",
        "the restarted counter starts over: 1",
    ],
    "04-objects.ipynb": [
        '"example"',
        "local: [1, 2, 3, 4], stored: [1, 2, 3]",
        "args: [ObjectRef(",
        "values: [1, 2, 3]",
        "499999500000.0",
        # :top lists the 8 MB vector in the shared-memory store.
        re.compile(r"Objects \(\d+\).*7\.63 MiB", re.S),
        "holds 1000 bytes",
        'Row { id: 2, name: "row2" }',
        "holds a `Vec<i32>` but was read as `String`",
        "timed out after",
        "task `sleepy` was cancelled",
    ],
    "05-cluster-inspection.ipynb": [
        re.compile(r"head at 127\.0\.0\.1:\d+, 1 node\(s\), \d+ CPUs"),
        "Cluster state at",
        "(example_function pid=",
        "Node status",
        # rayrepl list tasks --filter NAME=example_function
        re.compile(r"Total: 4\n(?:.*\n){4}(?:\d+\s+[0-9a-f]{32}\s+0\s+example_function\s+FINISHED.*\n){4}"),
        "inspected",
        re.compile(r"example_function\s+FINISHED: 4"),
    ],
    "06-placement-groups.ipynb": [
        # Where the bundles landed, by strategy, on three one-CPU nodes.
        re.compile(r'STRICT_PACK\s+bundles on \["(127\.0\.0\.\d)", "\1"\]$', re.M),
        re.compile(r'(?<!STRICT_)PACK\s+bundles on \["(127\.0\.0\.\d)", "(?!\1)127\.0\.0\.\d"\]$', re.M),
        re.compile(
            r'STRICT_SPREAD bundles on \["(127\.0\.0\.\d)", "(?!\1)(127\.0\.0\.\d)", "(?!\1|\2)127\.0\.0\.\d"\]$',
            re.M,
        ),
        re.compile(r'(?<!STRICT_)SPREAD\s+bundles on \["(127\.0\.0\.\d)", "(?!\1)127\.0\.0\.\d"\]$', re.M),
        "the counter in bundle 0 says 1",
        "a task in the group sees its group: true",
        "a task outside the group ran: false",
        re.compile(r"CREATED\s+STRICT_SPREAD\s+\{CPU: 1\}@[0-9a-f]{8}, \{CPU: 1\}@[0-9a-f]{8}, \{CPU: 1\}@[0-9a-f]{8}"),
        "reserved in placement groups",
        "the task outside ran on 127.0.0.",
        re.compile(r"the counter: actor Counter \([0-9a-f]+\) is dead: its placement group [0-9a-f]{36} was removed"),
        re.compile(r"waiting on it again: placement group [0-9a-f]{36} was removed"),
        "created within a second: false",
        "PENDING: No available node types can fulfill resource request [{CPU: 0.5}, {CPU: 0.5}, {CPU: 0.5}, {CPU: 0.5}]",
        '4 bundles on ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]',
        # SPREAD uses more than one node; a task pinned to one by its id runs there.
        re.compile(r'SPREAD tasks ran on \["127\.0\.0\.\d", "127\.0\.0\.\d'),
        re.compile(r"pinned to node (127\.0\.0\.\d)'s id, ran on \1\n"),
        "stopped",
    ],
}

# HTML the notebook must render: Ray's cluster card and :top's tables.
EXPECTED_HTML = {
    "01-ray-core-walkthrough.ipynb": ['class="rayrepl-context"'],
    "04-objects.ipynb": ['class="rayrepl-top"'],
    "05-cluster-inspection.ipynb": ['class="rayrepl-context"', 'class="rayrepl-top"'],
    "06-placement-groups.ipynb": ['class="rayrepl-context"'],
}

# Calls that block on objects and so may show a progress display.
BLOCKING = re.compile(r"ray::(get|wait|get_timeout)\b|\.await\b")
# Calls that may return before every ref is ready.
PARTIAL = re.compile(r"ray::(wait|get_timeout)\b")

_runs: dict[pathlib.Path, tuple[nbformat.NotebookNode | None, Exception | None, float]] = {}


def executed(path: pathlib.Path, out_dir: pathlib.Path) -> nbformat.NotebookNode:
    """Runs the notebook once per test session (the tests below share the run) and
    returns the executed copy; re-raises what stopped it."""
    if path not in _runs:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb,
            timeout=CELL_TIMEOUT,
            kernel_name=nb.metadata.kernelspec.name,
            allow_errors=False,
            resources={"metadata": {"path": str(out_dir)}},
        )
        started = time.monotonic()
        error = None
        try:
            client.execute()
        except (CellExecutionError, TimeoutError, RuntimeError) as e:
            error = e
        took = time.monotonic() - started
        # Kept for a look after a failure: pytest prints where.
        nbformat.write(nb, out_dir / path.name)
        _runs[path] = (nb, error, took)
    nb, error, took = _runs[path]
    print(f"{path.name}: executed in {took:.1f} s into {out_dir / path.name}")
    if error is not None:
        raise error
    return nb


@pytest.fixture(scope="session")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("notebooks")


def code_cells(nb: nbformat.NotebookNode) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def text_of(output: dict) -> str:
    if output["output_type"] == "stream":
        return output["text"]
    return output.get("data", {}).get("text/plain", "")


def test_there_are_notebooks() -> None:
    # A glob that finds nothing would otherwise pass by running no case at all.
    assert len(NOTEBOOKS) >= 6, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_outputs(path: pathlib.Path) -> None:
    """The saved file is a finished run on the rayrepl kernel, so readers (and GitHub)
    see the outputs without running anything."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "rayrepl"
    assert nb.metadata.language_info.name == "rust"
    counts = [c.execution_count for c in code_cells(nb)]
    # Executed top to bottom in one session: no cell skipped, none run twice.
    assert counts == list(range(1, len(counts) + 1)), f"execution counts {counts}: re-run the whole notebook"
    for cell in code_cells(nb):
        assert not any(o["output_type"] == "error" for o in cell.outputs), f"saved with an error:\n{cell.source}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_clean(path: pathlib.Path, out_dir: pathlib.Path) -> None:
    nb = executed(path, out_dir)
    cells = code_cells(nb)
    for i, cell in enumerate(cells):
        assert cell.execution_count is not None, f"not executed:\n{cell.source}"
        for output in cell.outputs:
            assert output["output_type"] != "error", f"{output.get('ename')}: {output.get('evalue')}\n{cell.source}"
            # Some trouble only prints: evcxr says on stderr that it dropped variables
            # (after a late :dep), and the notebooks print nothing there themselves.
            # The first cell may carry the kernel's start-up notes (building the ray
            # crate on a cold machine).
            # Work no node can hold is warned about there, on purpose.
            warning = output.get("text", "").startswith("(autoscaler) Warning: ")
            if output["output_type"] == "stream" and output["name"] == "stderr" and i > 0 and not warning:
                pytest.fail(f"unexpected stderr {output['text']!r} from:\n{cell.source}")
    text = "".join(text_of(o) for c in cells for o in c.outputs)
    for expected in EXPECTED.get(path.name, []):
        if isinstance(expected, re.Pattern):
            assert expected.search(text), f"no match for {expected.pattern!r} in the outputs:\n{text}"
        else:
            assert expected in text, f"{expected!r} is missing from the outputs:\n{text}"
    html = "".join(o.get("data", {}).get("text/html", "") for c in cells for o in c.outputs)
    for expected in EXPECTED_HTML.get(path.name, []):
        assert expected in html, f"{expected!r} is missing from the HTML outputs"


def test_walkthrough_waits_two_at_a_time(out_dir: pathlib.Path) -> None:
    """Seed 000's wait loop takes the results two by two: four rounds, each printing
    the two items that became ready, in order."""
    nb = executed(REPO / "notebooks" / "01-ray-core-walkthrough.ipynb", out_dir)
    cell = next(c for c in code_cells(nb) if "ray::wait(" in c.source)
    text = "".join(text_of(o) for o in cell.outputs if o["output_type"] == "stream")
    rounds = re.findall(r"Runtime: [\d.]+ seconds, data:\n((?:\(\d, \"\w+\"\)\n)+)", text)
    assert [r.count("\n") for r in rounds] == [2, 2, 2, 2, 8], text
    assert rounds[0] == '(0, "Learning")\n(1, "Ray")\n', text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_progress_ends_in_its_own_cell(path: pathlib.Path, out_dir: pathlib.Path) -> None:
    """A progress display belongs to the cell that blocked, and what the saved
    notebook keeps is its final state: finished, and with every ref done unless the
    cell waited with a timeout or for only some of its refs."""
    nb = executed(path, out_dir)
    for cell in code_cells(nb):
        for output in cell.outputs:
            if 'class="rayrepl-progress"' not in output.get("data", {}).get("text/html", ""):
                continue
            shown = output["data"]["text/plain"]
            assert BLOCKING.search(cell.source), f"a progress display in a cell that does not block:\n{shown}\n{cell.source}"
            assert "finished in" in shown, f"the display was left running:\n{shown}\n{cell.source}"
            if not PARTIAL.search(cell.source):
                for done, total in re.findall(r"(\d+)/(\d+) done", shown):
                    assert done == total, f"a finished get shows unfinished refs:\n{shown}\n{cell.source}"
