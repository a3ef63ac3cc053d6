//! Common mistakes, made in cells of a real session, and what the session says
//! about them: every compile error must point at the cell as it was typed (lines
//! and columns in the cell, its own text) and never show code the session or
//! evcxr adds around it.
//!
//! A test binary of its own (`harness = false`): the session starts this same
//! executable as its evaluation process and the cluster's daemons, as `rayrepl`
//! does, so `main` must hand those roles over before it runs the cells.

use ray_runtime::cluster::{LocalCluster, NodeResources};
use ray_session::{Session, SessionOptions};

/// Cells that define what the mistakes use.
const SETUP: &[&str] = &[
    "#[ray::remote]\nfn square(x: u64) -> u64 {\n    x * x\n}",
    "fn plain(x: u32) -> u32 { x }",
    "struct NotSer { n: u32 }",
    "let v = vec![1, 2, 3];",
];

/// A mistake: the cell, words the error must say, and the cell line it is on.
struct Mistake {
    what: &'static str,
    cell: &'static str,
    says: &'static str,
    line: usize,
}

const MISTAKES: &[Mistake] = &[
    Mistake { what: "a `let` missing its `;`", cell: "let a = 1\nlet b = 2;", says: "expected `;`", line: 1 },
    Mistake {
        what: "a `const` missing its `;`",
        cell: "const LIMIT: u32 = 10",
        says: "expected `;` at the end of the cell",
        line: 1,
    },
    Mistake { what: "a type mismatch", cell: "let n: u32 = \"three\";", says: "mismatched types", line: 1 },
    Mistake {
        what: "a borrow error",
        cell: "let mut items = vec![1];\nlet first = &items[0];\nitems.push(2);\nprintln!(\"{first}\");",
        says: "cannot borrow `items` as mutable",
        line: 3,
    },
    Mistake {
        what: "an unknown name",
        cell: "let total = undefined_name + 1;",
        says: "cannot find value `undefined_name`",
        line: 1,
    },
    Mistake {
        what: "a wrong argument count to a remote function",
        cell: "let r = square.remote(1, 2);",
        says: "argument",
        line: 1,
    },
    Mistake {
        what: ".remote() on a function without #[ray::remote]",
        cell: "let r = plain.remote(1);",
        says: "no method named `remote`",
        line: 1,
    },
    Mistake {
        what: "an argument type a remote function cannot send",
        cell: "#[ray::remote]\nfn takes(x: NotSer) -> u32 {\n    x.n\n}",
        says: "NotSer",
        line: 2,
    },
    Mistake {
        what: "use of a moved value",
        cell: "let s = String::from(\"a\");\nlet t = s;\nprintln!(\"{s} {t}\");",
        says: "moved value",
        line: 3,
    },
    Mistake {
        what: "a wrong return type in a remote function",
        cell: "#[ray::remote]\nfn label() -> u32 {\n    \"not a number\"\n}",
        says: "mismatched types",
        line: 3,
    },
    Mistake {
        what: "a remote function that uses an unknown name",
        cell: "let before = 1;\n#[ray::remote]\nfn total(x: u64) -> u64 {\n    x + missing\n}",
        says: "cannot find value `missing`",
        line: 4,
    },
    Mistake { what: "mismatched brackets", cell: "let w = vec![1, 2);", says: "delimiter", line: 1 },
    Mistake { what: "an unknown method", cell: "let n = v.lenght();", says: "no method named `lenght`", line: 1 },
    Mistake {
        what: "a wrong generic",
        cell: "let r: ray::ObjectRef<String> = square.remote(2);",
        says: "mismatched types",
        line: 1,
    },
    Mistake {
        what: "a mistake after an awaited remote call",
        cell: "let got = square.remote(3).await?;\nlet wrong: String = got;",
        says: "mismatched types",
        line: 2,
    },
];

/// Words only code the session or evcxr adds has.
const ADDED: &[&str] =
    &["__ray", "__private", "__trampoline", "evcxr", "use ray::prelude", "::ray::", "AwaitInCell", "wait_in_cell"];

/// The text without ANSI colour codes.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What is wrong with what the session said about `mistake`, if anything.
fn judge(mistake: &Mistake, said: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    let cell_lines: Vec<&str> = mistake.cell.lines().collect();
    if !said.contains(mistake.says) {
        wrong.push(format!("does not say {:?}", mistake.says));
    }
    for added in ADDED {
        if said.contains(added) {
            wrong.push(format!("shows added code ({added:?})"));
        }
    }
    // The token a parse error found is one the cell has.
    for header in said.lines().filter(|l| l.contains("Error: expected")) {
        let found = header.split_once(", found `").and_then(|(_, f)| f.split('`').next());
        if let Some(found) = found.filter(|f| !mistake.cell.contains(f)) {
            wrong.push(format!("names `{found}`, which is not in the cell"));
        }
    }
    if said.contains("found keyword `use`") {
        wrong.push("names evcxr's `use`".into());
    }
    // Places: `cell:LINE:COLUMN`, each within the cell.
    let places: Vec<usize> =
        said.match_indices("cell:").filter_map(|(at, _)| said[at + 5..].split(':').next()?.parse().ok()).collect();
    if !places.contains(&mistake.line) {
        wrong.push(format!("does not point at line {} (points at {places:?})", mistake.line));
    }
    if let Some(beyond) = places.iter().find(|l| **l == 0 || **l > cell_lines.len()) {
        wrong.push(format!("points at line {beyond}, beyond the cell's {}", cell_lines.len()));
    }
    // Quoted source lines (`  N │ text`, after the arrows of labels that span
    // lines) are the cell's own lines.
    for line in said.lines() {
        let Some((number, text)) = line.split_once('│') else { continue };
        let Ok(number) = number.trim().parse::<usize>() else { continue };
        let text = text.trim_start_matches(|c: char| " │╭╰├─▶┆".contains(c)).trim_end();
        match cell_lines.get(number.wrapping_sub(1)) {
            Some(cell_line) if cell_line.trim() == text => {}
            _ => wrong.push(format!("quotes line {number} as {text:?}, which is not the cell's")),
        }
    }
    wrong
}

fn main() {
    // The cluster's daemons and the evaluation process are this executable.
    ray_runtime::roles::run_requested_role();
    ray_session::hook();

    let root = tempfile::tempdir().expect("a session root");
    // SAFETY: no other thread runs yet, and nothing reads the environment meanwhile.
    unsafe { std::env::set_var("RAYREPL_TEMP_DIR", root.path()) };
    let mut cluster = LocalCluster::start(&NodeResources::default()).expect("a local cluster");
    let options = SessionOptions::new(cluster.head.address.clone(), cluster.token.clone());
    let mut session = Session::start(&options, |status| eprintln!("{status}")).expect("a session");

    struct Quiet;
    impl ray_session::CellObserver for Quiet {
        fn event(&mut self, _: ray_session::SessionEvent) {}
    }
    let tick = std::time::Duration::from_millis(100);
    for cell in SETUP {
        if let Err(e) = session.execute_observed(cell, tick, &mut Quiet) {
            panic!("setup cell {cell:?} failed:\n{}", plain(&session.describe_error(&e)));
        }
    }
    let (mut passed, mut failed) = (0, 0);
    for mistake in MISTAKES {
        let said = match session.execute_observed(mistake.cell, tick, &mut Quiet) {
            Ok(_) => String::from("(the cell ran without an error)"),
            Err(e) => plain(&session.describe_error(&e)),
        };
        let wrong = judge(mistake, &said);
        if wrong.is_empty() {
            println!("ok: {}", mistake.what);
            passed += 1;
        } else {
            println!("FAILED: {}: {}\n--- cell:\n{}\n--- said:\n{said}", mistake.what, wrong.join("; "), mistake.cell);
            failed += 1;
        }
    }
    drop(session);
    cluster.stop();
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
