//! The `rayrepl` REPL, driven through a pseudo-terminal as a person would use it:
//! seed 000's walkthrough cell by cell, its `wait` loop typed line by line, keys
//! typed while a cell runs, compile errors shown on the cell, the live progress
//! viewport, Ctrl-C during a cell (one message, and none of it reaching the
//! compiler), `:top`, and Ctrl-D leaving no process behind, even while the
//! evaluator is still starting behind the first prompt.
//!
//! The sessions run one at a time: each compiles cells with rustc, and they share
//! one evcxr build directory so only the first compiles the `ray` crate.

mod pty;
mod support;

use pty::Terminal;
use std::sync::Mutex;
use std::time::Duration;

/// One REPL at a time (see the module docs).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A cell that compiles and runs; generous for a cold 2-core machine.
const CELL: Duration = Duration::from_secs(90);

struct Repl {
    term: Terminal,
    _root: support::SessionRoot,
    _history: tempfile::NamedTempFile,
}

impl Repl {
    fn start() -> Repl {
        let root = support::session_root();
        let history = tempfile::NamedTempFile::new().expect("history file");
        let term = Terminal::spawn(
            &support::rayrepl_bin(),
            &[],
            &[
                ("RAYREPL_TEMP_DIR", root.path().display().to_string()),
                ("RAYREPL_HISTORY", history.path().display().to_string()),
            ],
        );
        // The first session on a machine builds the ray crate for cells.
        term.wait_for("rayrepl 0.1.0", Duration::from_secs(600));
        term.wait_until("the first prompt", Duration::from_secs(30), |s| s.trim_end().ends_with(">>"));
        Repl { term, _root: root, _history: history }
    }

    /// Types a cell (lines joined with Enter, and a blank line after a block of
    /// several lines, which runs it) at the prompt and waits for the next prompt;
    /// returns what the cell printed.
    fn cell(&mut self, code: &str) -> String {
        self.wait_prompt(CELL);
        let already = self.term.transcript().len();
        for line in code.lines() {
            self.term.type_line(line);
        }
        if ends_in_block(code) {
            self.term.type_line("");
        }
        let last = code.lines().last().unwrap_or(code).trim();
        let deadline = std::time::Instant::now() + CELL;
        let echoed = loop {
            let t = self.term.transcript();
            if let Some(at) = t[already.min(t.len())..].rfind(last) {
                break already + at + last.len();
            }
            assert!(std::time::Instant::now() < deadline, "no echo of {last:?}; screen:\n{}", self.term.screen());
            std::thread::sleep(Duration::from_millis(20));
        };
        self.wait_prompt(CELL);
        self.term.transcript()[echoed..].to_string()
    }

    /// Presses Enter on what is already typed and waits for the next prompt.
    fn submit(&mut self) -> String {
        let already = self.term.transcript().len();
        self.term.type_text("\r");
        self.wait_prompt(CELL);
        self.term.transcript()[already..].to_string()
    }

    /// Asserts that a cell's output contains `needle`, showing the whole session
    /// if it does not.
    fn expect(&self, out: &str, needle: &str) {
        assert!(
            out.contains(needle),
            "expected {needle:?} in the cell's output {out:?}; session:\n{}",
            self.term.transcript()
        );
    }

    /// Waits until the last line on the screen is an empty prompt.
    fn wait_prompt(&self, timeout: Duration) {
        self.term.wait_until("the prompt", timeout, |s| {
            s.lines().rev().find(|l| !l.trim().is_empty()).is_some_and(|l| l.trim_end() == ">>")
        });
    }
}

/// Whether Enter after `code` waits for a blank line: several lines ending in a block.
fn ends_in_block(code: &str) -> bool {
    code.trim().contains('\n') && code.trim_end().ends_with('}')
}

#[test]
fn seed_000_walkthrough_cell_by_cell() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut repl = Repl::start();
    let greeting = repl.term.screen();
    assert!(greeting.contains("local cluster at 127.0.0.1:") && greeting.contains("1 node"), "{greeting}");

    repl.cell(r#"const DATABASE: [&str; 8] = ["Learning", "Ray", "Flexible", "Distributed", "Python", "for", "Machine", "Learning"];"#);
    repl.cell("let database: Vec<String> = DATABASE.iter().map(|s| s.to_string()).collect();");
    repl.cell(
        "#[ray::remote]\nfn retrieve_task(item: usize) -> (usize, String) {\nstd::thread::sleep(std::time::Duration::from_millis(item as u64 * 100));\n(item, DATABASE[item].to_string())\n}",
    );
    // No type annotation: the expansion lets evcxr infer ObjectRef<(usize, String)>.
    repl.cell("let r = retrieve_task.remote(1);");
    let out = repl.cell("ray::get(&r)");
    repl.expect(&out, r#"Ok((1, "Ray"))"#);

    repl.cell("let object_references: Vec<_> = (0..8).map(|item| retrieve_task.remote(item)).collect();");
    let out = repl.cell("ray::get(&object_references)?");
    repl.expect(&out, r#"(7, "Learning")]"#);

    repl.cell(
        "#[ray::remote]\nfn retrieve_from_db(item: usize, db: Vec<String>) -> (usize, String) {\n(item, db[item].clone())\n}",
    );
    repl.cell("let db_object_ref = ray::put(&database)?;");
    let out =
        repl.cell("ray::get(&(0..8).map(|item| retrieve_from_db.remote(item, &db_object_ref)).collect::<Vec<_>>())?");
    repl.expect(&out, r#"(3, "Distributed")"#);

    // wait with num_returns=2 and a timeout, in a loop, as the seed does.
    repl.cell("let mut pending: Vec<_> = (0..8).map(|item| retrieve_from_db.remote(item, &db_object_ref)).collect();");
    repl.cell("let mut rounds = 0;");
    let out = repl.cell(
        "while !pending.is_empty() {\nlet (done, rest) = ray::wait(&pending, 2.min(pending.len()), Some(std::time::Duration::from_secs(7)))?;\npending = rest;\nrounds += 1;\nprintln!(\"round {rounds}: {:?}\", ray::get(&done)?);\n}",
    );
    repl.expect(&out, "round 4:");

    // Task dependencies: a ref passed to a task is resolved to its value.
    repl.cell(
        "#[ray::remote]\nfn follow_up_task(result: (usize, String)) -> (usize, usize) {\n(result.0, result.0 + 1)\n}",
    );
    repl.cell(
        "let firsts: Vec<_> = [0, 2, 4, 6].into_iter().map(|i| retrieve_from_db.remote(i, &db_object_ref)).collect();",
    );
    let out = repl.cell("ray::get(&firsts.iter().map(|r| follow_up_task.remote(r)).collect::<Vec<_>>())?");
    repl.expect(&out, "[(0, 1), (2, 3), (4, 5), (6, 7)]");

    // The DataTracker actor, handed to tasks that call it.
    repl.cell("#[ray::remote]\nstruct DataTracker { counts: u64 }");
    repl.cell(
        "#[ray::remote]\nimpl DataTracker {\nfn new() -> Self { DataTracker { counts: 0 } }\nfn increment(&mut self) { self.counts += 1; }\nfn counts(&self) -> u64 { self.counts }\n}",
    );
    repl.cell(
        "#[ray::remote]\nfn retrieve_tracker_task(item: usize, tracker: ray::ActorHandle<DataTracker>, db: Vec<String>) -> (usize, String) {\nray::get(&tracker.increment()).unwrap();\n(item, db[item].clone())\n}",
    );
    repl.cell("let tracker = DataTracker::remote()?;");
    let out = repl.cell(
        "ray::get(&(0..8).map(|item| retrieve_tracker_task.remote(item, tracker.clone(), &db_object_ref)).collect::<Vec<_>>())?.len()",
    );
    repl.expect(&out, "\n8");
    // The actor handle and the refs persist across cells; top-level .await works.
    let out = repl.cell("tracker.counts().await?");
    repl.expect(&out, "\n8");
    let out = repl.cell("r.await");
    repl.expect(&out, r#"Ok((1, "Ray"))"#);

    // A redefined remote function runs its new code in new tasks.
    repl.cell("#[ray::remote]\nfn version() -> u32 { 1 }");
    let out = repl.cell("ray::get(&version.remote())?");
    repl.expect(&out, "\n1");
    repl.cell("#[ray::remote]\nfn version() -> u32 { 2 }");
    let out = repl.cell("ray::get(&version.remote())?");
    repl.expect(&out, "\n2");

    // Worker output reaches the REPL with Ray's prefix, all of it before the
    // result of the cell that waited for it.
    repl.cell("#[ray::remote]\nfn shout(s: String, n: u32) -> u32 {\nfor i in 0..n { println!(\"{s}! {i}\"); }\nn\n}");
    let out = repl.cell(
        "format!(\"result: {}\", ray::get(&(0..4).map(|_| shout.remote(\"hello\".to_string(), 50)).collect::<Vec<_>>())?.iter().sum::<u32>())",
    );
    repl.expect(&out, "result: 200");
    let before = &out[..out.find("result: 200").unwrap_or(0)];
    assert_eq!(before.matches("(shout pid=").count(), 200, "every line before the result:\n{out}");
    assert!(before.contains("hello! 49"), "{out}");

    // A panicking task shows its error with the function name, and the session goes on.
    repl.cell("#[ray::remote]\nfn broken(x: u32) -> u32 { if x > 0 { panic!(\"bad input {x}\") } x }");
    let out = repl.cell("ray::get(&broken.remote(3))");
    repl.expect(&out, "broken");
    repl.expect(&out, "bad input 3");
    // A compile error shows readably, and the session goes on.
    let out = repl.cell("let y: u32 = \"text\";");
    repl.expect(&out, "mismatched types");
    let out = repl.cell("database.len() + 1");
    repl.expect(&out, "\n9");
}

#[test]
fn progress_viewport_ctrl_c_top_and_ctrl_d() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut repl = Repl::start();
    let repl_pid = repl.term.pid() as i32;
    repl.cell(
        "#[ray::remote]\nfn slow(i: u64) -> u64 {\nstd::thread::sleep(std::time::Duration::from_millis(400));\ni\n}",
    );
    repl.cell("let keep = 41;");

    // While a cell blocks, the viewport shows per-function progress; it is gone after.
    // 30 tasks of 0.4 s on two CPUs: still running after the next cell compiles.
    repl.cell("let refs: Vec<_> = (0..30).map(|i| slow.remote(i)).collect();");
    repl.wait_prompt(CELL);
    repl.term.type_line("ray::get(&refs)?.len()");
    let during = repl.term.wait_for("⏳ waiting", CELL);
    assert!(during.contains("slow") && during.contains("running"), "{during}");
    repl.term.wait_for("\n30", CELL);
    repl.term.wait_until("the viewport to be erased", Duration::from_secs(5), |s| !s.contains("⏳"));

    // Ctrl-C cancels the running cell's tasks and keeps the session's variables.
    repl.cell("let many: Vec<_> = (0..40).map(|i| slow.remote(i)).collect();");
    repl.wait_prompt(CELL);
    repl.term.type_line("ray::get(&many)?.len()");
    repl.term.wait_for("⏳ waiting", CELL);
    let before = repl.term.transcript().len();
    repl.term.ctrl('c');
    let out = repl.term.wait_for("Interrupted: cancelled", Duration::from_secs(10));
    assert!(!out.contains("\n40\n"), "{out}");
    repl.wait_prompt(Duration::from_secs(10));
    // One message says what happened: no echoed ^C, and not the cell's own report
    // of the error its `get` returned.
    let said = repl.term.transcript()[before..].to_string();
    assert_eq!(said.to_lowercase().matches("interrupted").count(), 1, "{said}");
    assert!(!said.contains("^C") && !said.contains("was cancelled"), "{said}");
    let out = repl.cell("keep + 1");
    repl.expect(&out, "\n42");
    let out = repl.cell("many.len()");
    repl.expect(&out, "\n40");

    // A Ctrl-C while the next cell compiles reaches neither the compiler nor the
    // cell's variables: later cells still build.
    repl.wait_prompt(CELL);
    repl.term.type_line("let compiled = keep + 1;");
    std::thread::sleep(Duration::from_millis(150));
    repl.term.ctrl('c');
    repl.wait_prompt(CELL);
    let out = repl.cell("compiled * 2 + keep");
    repl.expect(&out, "\n125");

    // Tab completes the session's names and the REPL's commands.
    repl.wait_prompt(CELL);
    repl.term.type_text("kee\t");
    repl.term.wait_until("keep completed", Duration::from_secs(20), |s| s.lines().any(|l| l.trim_end() == ">> keep"));
    let out = repl.submit();
    repl.expect(&out, "\n41");
    repl.term.type_text(":hel\t");
    repl.term.wait_until(":help completed", Duration::from_secs(5), |s| s.lines().any(|l| l.trim_end() == ">> :help"));
    let out = repl.submit();
    repl.expect(&out, ":top");

    // Ctrl-C at the prompt clears the line.
    repl.wait_prompt(CELL);
    repl.term.type_text("this line is discarded");
    // Wait for the echo: rustyline drops keys that arrive in the same read.
    repl.term.wait_for(">> this line is discarded", Duration::from_secs(10));
    repl.term.ctrl('c');
    repl.wait_prompt(Duration::from_secs(10));
    let out = repl.cell("keep");
    repl.expect(&out, "\n41");
    assert!(!out.contains("discarded"), "{out}");

    // :top opens the dashboard on the alternate screen; q comes back.
    repl.wait_prompt(CELL);
    repl.term.type_line(":top");
    let top = repl.term.wait_for("Nodes", Duration::from_secs(20));
    assert!(top.contains("Tasks") && top.contains("Actors") && top.contains("Objects"), "{top}");
    repl.term.wait_for("ALIVE", Duration::from_secs(10));
    repl.term.type_text("q");
    repl.wait_prompt(Duration::from_secs(10));
    let out = repl.cell("keep * 2");
    repl.expect(&out, "\n82");

    // Ctrl-D leaves, and takes the local cluster with it.
    let procs = support::descendants(repl_pid);
    assert!(procs.len() >= 3, "expected the evaluator, head and node under the REPL: {procs:?}");
    repl.term.ctrl('d');
    assert_eq!(repl.term.wait_exit(Duration::from_secs(20)), Some(true), "{}", repl.term.screen());
    let left = support::wait_gone(&procs, Duration::from_secs(10));
    assert!(left.is_empty(), "processes left behind: {left:?}");

    // `rayrepl --address` attaches to a running cluster, and history survives
    // the session: Up recalls the last cell in the new one.
    let root = repl._root.path().to_path_buf();
    let address = support::start_head(&root, "1");
    // A second node, playing another machine with its own session directory: a
    // cell's library must reach it through the head.
    let far_root = support::session_root();
    let mut join = std::process::Command::new(support::rayrepl_bin());
    join.args(["start", "--address", &address, "--node-ip-address", "127.0.0.2"])
        .args(["--num-cpus", "1", "--resources", r#"{"Far": 1}"#])
        .env("RAYREPL_TEMP_DIR", far_root.path())
        .env("RAYREPL_TOKEN_FILE", root.join("session_latest/token"))
        .env("RAYREPL_HOST_ID", "another-machine")
        .env_remove("RAYREPL_TOKEN")
        .env_remove("RAYREPL_ADDRESS");
    let joined = support::run_bounded(join, Duration::from_secs(60));
    assert!(joined.status.success(), "{}", String::from_utf8_lossy(&joined.stderr));
    let term = Terminal::spawn(
        &support::rayrepl_bin(),
        &["--address", &address],
        &[
            ("RAYREPL_TEMP_DIR", root.display().to_string()),
            ("RAYREPL_HISTORY", repl._history.path().display().to_string()),
        ],
    );
    let greeting = term.wait_for("rayrepl 0.1.0", Duration::from_secs(120));
    assert!(greeting.contains(&format!("· cluster at {address}")) && greeting.contains("2 CPUs"), "{greeting}");
    let mut again = Repl { term, _root: support::session_root(), _history: tempfile::NamedTempFile::new().unwrap() };
    again.wait_prompt(Duration::from_secs(30));
    again.term.type_text("\x1b[A");
    again
        .term
        .wait_until("the recalled cell", Duration::from_secs(10), |s| s.lines().any(|l| l.trim_end() == ">> keep * 2"));
    again.term.ctrl('u');
    let out = again.cell("#[ray::remote]\nfn one() -> u32 { 1 }");
    assert!(!out.contains("Error"), "{out}");
    let out = again.cell("one.remote().await");
    again.expect(&out, "Ok(1)");
    let out = again.cell("#[ray::remote]\nfn far() -> u32 { println!(\"far away\"); 2 }");
    assert!(!out.contains("Error"), "{out}");
    let out = again.cell("far.options().resource(\"Far\", 1.0).remote().await");
    again.expect(&out, "Ok(2)");
    // Its output comes back through the head, maybe after the result.
    again.term.wait_in_transcript("ip=127.0.0.2) far away", Duration::from_secs(10));
    again.term.ctrl('d');
    assert_eq!(again.term.wait_exit(Duration::from_secs(20)), Some(true));
    let stopped = support::rayrepl(far_root.path(), &["stop"]);
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    let stopped = support::rayrepl(&root, &["stop"]);
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
}

/// Seed 000's setup, as cells a person types line by line.
const SEED_000_SETUP: &[&str] = &[
    "use std::time::{Duration, Instant};",
    r#"const DATABASE: [&str; 8] = ["Learning", "Ray", "Flexible", "Distributed", "Python", "for", "Machine", "Learning"];"#,
    "fn print_runtime(input_data: &[(usize, String)], start_time: Instant) {\n    println!(\"Runtime: {:.2} seconds, data:\", start_time.elapsed().as_secs_f64());\n    for data in input_data {\n        println!(\"{data:?}\");\n    }\n}",
    "#[ray::remote]\nfn retrieve_task(item: usize, db: Vec<String>) -> (usize, String) {\n    std::thread::sleep(Duration::from_millis(item as u64 * 100));\n    (item, db[item].clone())\n}",
    "let database: Vec<String> = DATABASE.iter().map(|s| s.to_string()).collect();",
    "let db_object_ref = ray::put(&database)?;",
];

/// Seed 000's `wait` loop as the notebook has it, blank lines included. (A cell of
/// its own cannot infer `Vec::new()`'s type from later cells, so it is written.)
const SEED_000_WAIT: &str = "let start = Instant::now();
let mut object_references: Vec<_> = (0..8).map(|item| retrieve_task.remote(item, &db_object_ref)).collect();
let mut all_data: Vec<(usize, String)> = Vec::new();

while !object_references.is_empty() {
    let num_returns = 2.min(object_references.len());
    let (finished, not_finished) = ray::wait(&object_references, num_returns, Some(Duration::from_secs(7)))?;
    object_references = not_finished;
    let data = ray::get(&finished)?;
    print_runtime(&data, start);
    all_data.extend(data);
}

print_runtime(&all_data, start);";

/// The items of each `Runtime:` block in `out`, with the block's seconds. A line
/// printed above the progress viewport follows the viewport's last frame in the
/// transcript, on the same line once escapes are stripped, so both are looked for
/// anywhere in a line.
fn runtime_blocks(out: &str) -> Vec<(f64, Vec<usize>)> {
    let mut blocks: Vec<(f64, Vec<usize>)> = Vec::new();
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.split_once("Runtime: ").map(|(_, rest)| rest) {
            let seconds = rest.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
            blocks.push((seconds, Vec::new()));
        } else if let (Some(block), Some(item)) =
            (blocks.last_mut(), line.rsplit_once('(').and_then(|(_, l)| l.split(',').next()?.parse().ok()))
        {
            block.1.push(item);
        }
    }
    blocks
}

/// Types seed 000's wait loop line by line, `pause` after each Enter, and checks
/// that it gives the seed's output: pairs as they finish, then all eight.
fn type_seed_000_wait(repl: &mut Repl, pause: Duration) {
    repl.wait_prompt(CELL);
    let before = repl.term.transcript().len();
    for line in SEED_000_WAIT.lines() {
        repl.term.type_line(line);
        std::thread::sleep(pause);
    }
    let deadline = std::time::Instant::now() + CELL;
    loop {
        let out = repl.term.transcript()[before..].to_string();
        if runtime_blocks(&out).len() >= 5 && out.contains("(7, \"Learning\")") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the wait loop never finished:\n{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    repl.wait_prompt(CELL);
    let out = repl.term.transcript()[before..].to_string();
    let blocks = runtime_blocks(&out);
    let items: Vec<Vec<usize>> = blocks.iter().map(|b| b.1.clone()).collect();
    assert_eq!(
        items,
        vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7], (0..8).collect()],
        "typed with {pause:?} pauses:\n{out}"
    );
    assert!(blocks.windows(2).all(|w| w[0].0 <= w[1].0), "runtimes go back in time: {blocks:?}\n{out}");
    assert!(!out.contains("rror"), "typed with {pause:?} pauses:\n{out}");
}

#[test]
fn typing_line_by_line_and_ahead_and_errors_in_the_cell() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut repl = Repl::start();
    for cell in SEED_000_SETUP {
        let out = repl.cell(cell);
        assert!(!out.contains("rror"), "{cell}: {out}");
    }
    type_seed_000_wait(&mut repl, Duration::ZERO);
    type_seed_000_wait(&mut repl, Duration::from_millis(400));

    // Keys typed while a cell runs come out as the cells they make, in order, with
    // their results.
    repl.cell("let x = 1;");
    let before = repl.term.transcript().len();
    repl.term.type_line("std::thread::sleep(Duration::from_secs(2));");
    std::thread::sleep(Duration::from_millis(300));
    repl.term.type_line("let y = 2;");
    repl.term.type_line("let z = 3;");
    repl.term.type_line("x + y + z");
    repl.term.wait_in_transcript("\n6\n", CELL);
    repl.wait_prompt(CELL);
    let out = repl.term.transcript()[before..].to_string();
    let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("no {s:?} in:\n{out}"));
    assert!(at(">> let y = 2;") < at(">> let z = 3;") && at(">> let z = 3;") < at(">> x + y + z"), "{out}");
    assert!(at(">> x + y + z") < at("\n6\n") && !out.contains("rror"), "{out}");

    // An expression ending in an operator, or a `let` without its `;`, goes on to
    // the next line.
    let out = repl.cell("x +\ny");
    repl.expect(&out, "\n3");
    let out = repl.cell("let w = x\n    + z;");
    assert!(!out.contains("rror"), "{out}");
    let out = repl.cell("w");
    repl.expect(&out, "\n4");

    // A compile error points at the line the person typed, in the cell, and shows
    // none of the code the REPL adds around it.
    let out = repl.cell("#[ray::remote]\nfn doubled(n: u32) -> u32 {\n    n * \"two\"\n}");
    repl.expect(&out, "cell:3");
    repl.expect(&out, "n * \"two\"");
    for added in ["__ray", "::ray::", "__private", "evcxr", "use ray::prelude"] {
        assert!(!out.contains(added), "{added:?} in {out}");
    }
}

#[test]
fn leaving_while_the_evaluator_starts_leaves_no_process_behind() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut repl = Repl::start();
    // The prompt comes before the evaluator is up; what starting runs (the
    // evaluation process, cargo, rustc, the cluster) is gathered while it runs.
    let repl_pid = repl.term.pid() as i32;
    let mut seen = std::collections::HashSet::new();
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        seen.extend(support::descendants(repl_pid));
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(seen.len() >= 3, "expected the evaluator, head and node under the REPL: {seen:?}");
    repl.term.ctrl('d');
    assert_eq!(repl.term.wait_exit(Duration::from_secs(30)), Some(true), "{}", repl.term.screen());
    let left = support::wait_gone(&seen, Duration::from_secs(15));
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
