//! Is this input a whole cell yet?
//!
//! The REPL keeps reading lines while brackets are open, and a Jupyter kernel
//! answers `is_complete_request` with complete, incomplete or invalid. Both need
//! the same judgement, made on tokens: brackets inside strings, chars and comments
//! do not count. Balanced input that does not parse as Rust statements is invalid:
//! more lines cannot mend it, so a front-end should run it and show the error.

/// What a front-end should do with the input so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// Run it.
    Complete,
    /// Keep reading: a bracket, string or block comment is still open.
    Incomplete,
    /// A closing bracket has no opening one, or the code does not parse; running
    /// it would only fail.
    Invalid,
}

/// Judges `code` by its brackets, strings and comments.
pub fn completeness(code: &str) -> Completeness {
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
                        (None, _) => return Completeness::Incomplete,
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
                            None => return Completeness::Incomplete,
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
                        None => return Completeness::Incomplete,
                        Some('\\') => i += 2,
                        Some('"') => break,
                        _ => i += 1,
                    }
                }
            }
            '\'' => {
                // A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
                if next == Some('\\') {
                    if let Some(end) = chars[i + 2..].iter().position(|c| *c == '\'') {
                        i += end + 2;
                    }
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 2;
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
                    return Completeness::Invalid;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if !stack.is_empty() || ends_with_attribute(code) {
        return Completeness::Incomplete;
    }
    if parses_as_statements(code) { Completeness::Complete } else { Completeness::Invalid }
}

/// Whether `code` parses as the body of a block, as evcxr runs it. `:commands`
/// are evcxr's own syntax and are left to evcxr.
fn parses_as_statements(code: &str) -> bool {
    code.lines().any(|l| l.trim_start().starts_with(':'))
        || syn::parse_str::<syn::Block>(&format!("{{\n{code}\n}}")).is_ok()
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
        assert_eq!(completeness("#[ray::remote]"), Incomplete);
        assert_eq!(completeness("#[ray::remote]\nfn f() {}"), Complete);
    }

    #[test]
    fn balanced_code_that_does_not_parse_is_invalid() {
        assert_eq!(completeness("let = ;"), Invalid);
        assert_eq!(completeness("1 +"), Invalid);
        assert_eq!(completeness("r.await?"), Complete);
        assert_eq!(completeness(":dep rand = \"0.9\""), Complete);
        assert_eq!(completeness("#[ray::remote]\nstruct Counter { n: u64 }\nCounter::remote()?"), Complete);
    }
}
