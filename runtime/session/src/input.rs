//! Is this input a whole cell yet?
//!
//! The REPL keeps reading lines while the input is unfinished, and a Jupyter
//! kernel answers `is_complete_request` with complete, incomplete or invalid. Both
//! need the same judgement. Brackets are counted on tokens, so brackets inside
//! strings, chars and comments do not count. Balanced input is then parsed as the
//! statements of a block: if the parser ran out of input (`1 +`, `let x = 1`,
//! `for i in 0..3`), more lines can finish it; if it failed before the end, more
//! lines cannot mend it, and a front-end should run it and show the error.
//!
//! A terminal also needs to know what Enter means, which [`on_enter`] decides: as
//! in IPython, a complete line runs at once, except that input of several lines
//! ending in a block (`}`) runs on a blank line, so the block may go on with
//! `else`, another `impl` or a chained call.

/// What a front-end should do with the input so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// Run it.
    Complete,
    /// Keep reading: a bracket, string or block comment is still open, or a
    /// statement stops short (`1 +`, `let x = 1`, `fn f()`).
    Incomplete,
    /// A closing bracket has no opening one, or the code fails to parse before
    /// its end; running it would only fail.
    Invalid,
}

/// Judges `code` by its brackets, strings and comments, then by parsing it.
pub fn completeness(code: &str) -> Completeness {
    match judge(code) {
        Judgement::Complete => Completeness::Complete,
        Judgement::Open | Judgement::Unfinished => Completeness::Incomplete,
        Judgement::Invalid => Completeness::Invalid,
    }
}

/// What Enter does at the end of the input of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enter {
    /// Run the input as a cell.
    Run,
    /// Start a new line of the same cell.
    Continue,
}

/// What Enter does when `buffer` is the cell typed so far, its last line being
/// the one Enter ends. Complete or invalid input runs, except that input of several
/// lines whose last token closes a block runs only on a blank line. A blank line
/// also runs input whose brackets are closed but whose statement is not finished
/// (`let x = 1`), so a forgotten `;` ends in an error message, not in endless
/// continuation lines; open brackets, strings and comments always continue.
pub fn on_enter(buffer: &str) -> Enter {
    let blank_line_ends = buffer.contains('\n') && last_line_is_blank(buffer);
    match judge(buffer) {
        Judgement::Open => Enter::Continue,
        Judgement::Unfinished if blank_line_ends => Enter::Run,
        Judgement::Unfinished => Enter::Continue,
        Judgement::Invalid => Enter::Run,
        Judgement::Complete if blank_line_ends || !buffer.trim().contains('\n') || !ends_in_block(buffer) => Enter::Run,
        Judgement::Complete => Enter::Continue,
    }
}

/// Whether the last token of `code` (comments aside) is a `{ .. }` group.
fn ends_in_block(code: &str) -> bool {
    let last = code.parse::<proc_macro2::TokenStream>().ok().and_then(|t| t.into_iter().last());
    matches!(last, Some(proc_macro2::TokenTree::Group(g)) if g.delimiter() == proc_macro2::Delimiter::Brace)
}

/// Replays keys typed ahead, each Enter a `\n`, as [`on_enter`] would have taken
/// them at the prompt: the cells they complete, in order, and the unfinished rest
/// for the next prompt. Enter on an empty prompt runs nothing.
pub fn typed_cells(typed: &str) -> (Vec<String>, String) {
    let mut cells = Vec::new();
    let mut buffer = String::new();
    let mut lines = typed.split('\n').peekable();
    while let Some(line) = lines.next() {
        buffer.push_str(line);
        if lines.peek().is_none() {
            break;
        }
        if buffer.trim().is_empty() {
            buffer.clear();
        } else if on_enter(&buffer) == Enter::Run {
            cells.push(buffer.trim_end().to_string());
            buffer.clear();
        } else {
            buffer.push('\n');
        }
    }
    (cells, buffer)
}

fn last_line_is_blank(buffer: &str) -> bool {
    buffer.rsplit('\n').next().is_some_and(|l| l.trim().is_empty())
}

/// The finer judgement behind [`Completeness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    Complete,
    /// A bracket, string or block comment is open, or an attribute waits for its item.
    Open,
    /// Balanced, but the parser ran out of input in the middle of a statement.
    Unfinished,
    Invalid,
}

fn judge(code: &str) -> Judgement {
    let mut stack: Vec<char> = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 1;
                i += 2;
                while depth > 0 {
                    match (chars.get(i), chars.get(i + 1)) {
                        (None, _) => return Judgement::Open,
                        (Some('*'), Some('/')) => {
                            depth -= 1;
                            i += 1;
                        }
                        (Some('/'), Some('*')) => {
                            depth += 1;
                            i += 1;
                        }
                        _ => {}
                    }
                    i += 1;
                }
                continue;
            }
            'r' if matches!(next, Some('#') | Some('"')) && !prev_is_ident(&chars, i) => {
                let mut j = i + 1;
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) == Some(&'"') {
                    j += 1;
                    loop {
                        match chars.get(j) {
                            None => return Judgement::Open,
                            Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                                i = j + hashes;
                                break;
                            }
                            _ => j += 1,
                        }
                    }
                }
            }
            '"' => {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Judgement::Open,
                        Some('\\') => i += 2,
                        Some('"') => break,
                        _ => i += 1,
                    }
                }
            }
            '\'' => {
                // A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
                if next == Some('\\') {
                    // The escaped char itself may be a quote: '\''.
                    match chars.get(i + 3..).and_then(|rest| rest.iter().position(|c| *c == '\'')) {
                        Some(end) => i += end + 3,
                        None => return Judgement::Open,
                    }
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 2;
                } else if next.is_some() && i + 2 == chars.len() {
                    // `'x` at the very end: a char literal still being typed.
                    return Judgement::Open;
                }
            }
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let open = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.pop() != Some(open) {
                    return Judgement::Invalid;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if !stack.is_empty() || ends_with_attribute(code) {
        return Judgement::Open;
    }
    parse_statements(code)
}

/// Parses `code` as the body of a block, as evcxr runs it. `:commands` are
/// evcxr's own syntax and are left to evcxr.
fn parse_statements(code: &str) -> Judgement {
    if code.lines().any(|l| l.trim_start().starts_with(':')) {
        return Judgement::Complete;
    }
    match syn::parse::Parser::parse_str(syn::Block::parse_within, code) {
        Ok(_) => Judgement::Complete,
        // At the end of the tokens syn either says so or points at the whole
        // input (the call site), as for a missing `;`.
        Err(e)
            if e.to_string().starts_with("unexpected end of input")
                || e.span().byte_range() == proc_macro2::Span::call_site().byte_range() =>
        {
            Judgement::Unfinished
        }
        Err(_) => Judgement::Invalid,
    }
}

/// `#[ray::remote]` on a line of its own: the item it belongs to comes next.
fn ends_with_attribute(code: &str) -> bool {
    let last = code.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    last.starts_with("#[") && last.ends_with(']')
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

#[cfg(test)]
mod tests {
    use super::Completeness::*;
    use super::*;

    #[test]
    fn judges_brackets_outside_strings_and_comments() {
        assert_eq!(completeness("let x = 1;"), Complete);
        assert_eq!(completeness("fn f() {"), Incomplete);
        assert_eq!(completeness("fn f() {\n  g(1,\n"), Incomplete);
        assert_eq!(completeness("fn f() {\n  g(1, 2)\n}"), Complete);
        assert_eq!(completeness("let s = \"{ not a bracket\";"), Complete);
        assert_eq!(completeness("let s = \"open"), Incomplete);
        assert_eq!(completeness("let c = '{';"), Complete);
        assert_eq!(completeness("fn f<'a>(x: &'a str) {}"), Complete);
        assert_eq!(completeness("// {\nlet x = 1;"), Complete);
        assert_eq!(completeness("/* { */ let x = 1;"), Complete);
        assert_eq!(completeness("/* open"), Incomplete);
        assert_eq!(completeness("let r = r#\"{\"#;"), Complete);
        assert_eq!(completeness("let x = 1; }"), Invalid);
        assert_eq!(completeness("(]"), Invalid);
        assert_eq!(completeness("let c = '\\'';"), Complete);
        assert_eq!(completeness("let c = '\\\\'; let d = '\\n';"), Complete);
        assert_eq!(completeness("let c = 'x"), Incomplete);
        assert_eq!(completeness("#[ray::remote]"), Incomplete);
        assert_eq!(completeness("#[ray::remote]\nfn f() {}"), Complete);
    }

    #[test]
    fn balanced_code_that_fails_before_its_end_is_invalid() {
        assert_eq!(completeness("let = ;"), Invalid);
        assert_eq!(completeness("1 + 1)"), Invalid);
        assert_eq!(completeness("let x = 1 let y = 2;"), Invalid);
        assert_eq!(completeness("x + y\nlet z = 1;"), Invalid);
        assert_eq!(completeness("const X: u32 = 5\nuse std::fmt;"), Invalid);
    }

    #[test]
    fn statements_that_stop_short_are_incomplete() {
        for code in [
            "1 +",
            "let x = 1",
            "let v: Vec<_> = (0..8)\n    .map(|i| i * 2)",
            "x &&",
            "fn f()",
            "fn f() -> u32",
            "for i in 0..3",
            "loop",
            "while !pending.is_empty()",
            "impl Tracker",
            "if x { 1 } else",
            "const X: u32 = 5",
            "x.",
        ] {
            assert_eq!(completeness(code), Incomplete, "{code:?}");
        }
    }

    #[test]
    fn expressions_without_a_semicolon_are_complete() {
        for code in [
            "x + y",
            "ray::get(&r)?",
            "r.await?",
            "database.len() + 1",
            "println!(\"{x}\")",
            "vec![1, 2]",
            ":dep rand = \"0.9\"",
            ":vars",
            "#[ray::remote]\nstruct Counter { n: u64 }\nCounter::remote()?",
            "let x = 1;\nx + 1",
        ] {
            assert_eq!(completeness(code), Complete, "{code:?}");
        }
    }

    #[test]
    fn enter_runs_single_lines_and_ends_blocks_on_a_blank_line() {
        assert_eq!(on_enter("let x = 1;"), Enter::Run);
        assert_eq!(on_enter("x + 1"), Enter::Run);
        assert_eq!(on_enter("let x = ;"), Enter::Run);
        assert_eq!(on_enter("fn f() {"), Enter::Continue);
        assert_eq!(on_enter("fn f() {\n    1\n}"), Enter::Continue);
        assert_eq!(on_enter("fn f() {\n    1\n}\n"), Enter::Run);
        assert_eq!(on_enter("fn f() {\n    1\n}\n   "), Enter::Run);
        assert_eq!(on_enter("fn f() {\n\n"), Enter::Continue);
        assert_eq!(on_enter("let x = 1"), Enter::Continue);
        assert_eq!(on_enter("let x = 1\n"), Enter::Run);
        assert_eq!(on_enter("if x {\n    1\n}"), Enter::Continue);
        assert_eq!(on_enter("if x {\n    1\n} else {\n    2\n}\n"), Enter::Run);
        assert_eq!(on_enter("fn f() {\n}\nfoo bar"), Enter::Run);
        assert_eq!(on_enter("1 +\n2"), Enter::Run);
        assert_eq!(on_enter("let v: Vec<_> = (0..8)\n    .map(|i| i * 2)\n    .collect();"), Enter::Run);
        assert_eq!(on_enter("let t = Tracker {\n    n: 0,\n};"), Enter::Run);
        assert_eq!(on_enter("#[ray::remote]\nstruct S { n: u64 }"), Enter::Continue);
        assert_eq!(on_enter("fn f() {\n} // done"), Enter::Continue);
        assert_eq!(on_enter("#[ray::remote]\n"), Enter::Continue);
    }

    #[test]
    fn typed_lines_become_the_cells_they_complete() {
        let typed = "let y = 2;\nlet z = 3;\nx + y + z\n";
        assert_eq!(typed_cells(typed), (vec!["let y = 2;".into(), "let z = 3;".into(), "x + y + z".into()], "".into()));
        let typed = "\nwhile i < 3 {\n    i += 1;\n}\n\nprintln!(\"{i}\");\nlet w";
        let (cells, rest) = typed_cells(typed);
        assert_eq!(cells, vec!["while i < 3 {\n    i += 1;\n}".to_string(), "println!(\"{i}\");".into()]);
        assert_eq!(rest, "let w");
        assert_eq!(typed_cells("fn f() {\n1\n"), (vec![], "fn f() {\n1\n".into()));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A complete statement of one line.
        fn statement() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z]{1,6}".prop_map(|n| format!("let v_{n} = 1;")),
                "[a-z]{1,6}".prop_map(|n| format!("f_{n}(\"{{ ( [\", ']');")),
                (0u32..100).prop_map(|n| format!("let v = vec![{n}, {n}]; // )")),
                Just("println!(\"}\");".to_string()),
            ]
        }

        /// A block item over several lines.
        fn block() -> impl Strategy<Value = String> {
            prop::collection::vec(statement(), 0..4).prop_map(|body| {
                let mut code = "fn f() {\n".to_string();
                for s in body {
                    code.push_str("    ");
                    code.push_str(&s);
                    code.push('\n');
                }
                code.push('}');
                code
            })
        }

        proptest! {
            #[test]
            fn never_panics_on_any_text(code in "\\PC{0,40}") {
                let _ = completeness(&code);
                let _ = on_enter(&code);
                let _ = typed_cells(&code);
            }

            #[test]
            fn complete_code_cut_inside_a_bracket_is_incomplete(code in block(), cut in 0usize..200) {
                prop_assert_eq!(completeness(&code), Complete);
                let cut = cut % code.len();
                let prefix = &code[..cut];
                let open = prefix.contains('{') ;
                if open {
                    prop_assert_eq!(completeness(prefix), Incomplete, "{:?}", prefix);
                    prop_assert_eq!(on_enter(prefix), Enter::Continue);
                }
            }

            #[test]
            fn an_unmatched_closing_bracket_is_invalid(code in block(), closer in prop::sample::select(vec![')', ']', '}'])) {
                let code = format!("{code}{closer}");
                prop_assert_eq!(completeness(&code), Invalid);
                prop_assert_eq!(on_enter(&code), Enter::Run);
            }

            #[test]
            fn lines_typed_one_by_one_run_as_they_complete(
                lines in prop::collection::vec(prop_oneof![statement(), block()], 1..5),
            ) {
                // Blocks end with a blank line, as a person types them.
                let typed: String = lines.iter().map(|l| if l.contains('\n') { format!("{l}\n\n") } else { format!("{l}\n") }).collect();
                let (cells, rest) = typed_cells(&typed);
                prop_assert_eq!(cells, lines);
                prop_assert_eq!(rest, "");
            }

            #[test]
            fn every_cell_replayed_is_one_enter_would_run(typed in "[a-z{}();=\n ]{0,60}") {
                let (cells, _) = typed_cells(&typed);
                for cell in cells {
                    prop_assert!(!cell.trim().is_empty());
                    let runs = on_enter(&cell) == Enter::Run || on_enter(&format!("{cell}\n")) == Enter::Run;
                    prop_assert!(runs, "{:?}", cell);
                }
            }
        }
    }
}
