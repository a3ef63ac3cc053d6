//! Cell pre-expansion: the cell as evcxr should see it.
//!
//! evcxr infers the types of a cell's variables with rust-analyzer, which does not
//! expand proc macros, so after `#[ray::remote] fn square(..)` the line
//! `let r = square.remote(3);` would fail with "couldn't automatically determine
//! type". The session therefore expands `#[ray::remote]` items itself, with the
//! same code generator as the proc macro but in cell mode (unmangled trampolines
//! that workers look up in the shipped cell library), and hands evcxr plain Rust.
//!
//! It also rewrites top-level `.await`: a cell is not async, so `r.await` becomes a
//! blocking wait. On an `ObjectRef` that is `ray::get`, which shows progress and
//! honours Ctrl-C; any other future is driven to completion on the spot.
//!
//! Statements the session does not change keep their original text, so compile
//! errors point at what the user typed.

use proc_macro2::{LineColumn, TokenStream};
use quote::{ToTokens, quote};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;

/// The cell rewritten for evcxr; `None` when nothing needed rewriting.
pub fn expand_cell(cell: &str) -> Option<String> {
    let (commands, code) = split_commands(cell);
    let block: syn::Block = syn::parse_str(&format!("{{\n{code}\n}}")).ok()?;
    let offsets = LineOffsets::new(&format!("{{\n{code}\n}}"));
    let wrapped = format!("{{\n{code}\n}}");
    let mut out = String::new();
    let mut changed = false;
    let mut cursor = offsets.offset(block.brace_token.span.open().end());
    for stmt in block.stmts {
        let span = stmt.span();
        let (start, end) = (offsets.offset(span.start()), offsets.offset(span.end()));
        if start < cursor || end > wrapped.len() {
            return None;
        }
        out.push_str(&wrapped[cursor..start]);
        match rewrite(stmt) {
            Some(text) => {
                out.push_str(&protect_from_command_parser(&text));
                changed = true;
            }
            None => out.push_str(&wrapped[start..end]),
        }
        cursor = end;
    }
    let close = offsets.offset(block.brace_token.span.close().start());
    if close >= cursor {
        out.push_str(&wrapped[cursor..close]);
    }
    if !changed {
        return None;
    }
    let body = out.strip_prefix('\n').unwrap_or(&out);
    let body = body.strip_suffix('\n').unwrap_or(body);
    Some(if commands.is_empty() { body.to_string() } else { format!("{commands}{body}") })
}

/// evcxr's `:commands` are lines of their own; they stay first, in order.
fn split_commands(cell: &str) -> (String, String) {
    let mut commands = String::new();
    let mut code = String::new();
    for line in cell.lines() {
        if line.trim_start().starts_with(':') {
            commands.push_str(line);
            commands.push('\n');
        } else {
            code.push_str(line);
            code.push('\n');
        }
    }
    let code = code.strip_suffix('\n').unwrap_or(&code).to_string();
    (commands, code)
}

/// evcxr takes any line that starts with spaces and `:` for a command, and
/// generated code has lines like `    ::ray::submit(`; a tab in front hides them.
fn protect_from_command_parser(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if line.trim_start().starts_with(':') {
            out.push('\t');
        }
        out.push_str(line);
    }
    out
}

/// The new text of a statement, if it needs one.
fn rewrite(stmt: syn::Stmt) -> Option<String> {
    match stmt {
        syn::Stmt::Item(item) => expand_remote_item(item),
        mut other => {
            let mut awaits = TopLevelAwait::default();
            awaits.visit_stmt_mut(&mut other);
            awaits.rewritten.then(|| other.to_token_stream().to_string())
        }
    }
}

fn is_remote_attr(attr: &syn::Attribute) -> bool {
    let segments: Vec<String> = attr.path().segments.iter().map(|s| s.ident.to_string()).collect();
    matches!(segments.iter().map(String::as_str).collect::<Vec<_>>().as_slice(), ["ray", "remote"] | ["remote"])
}

fn expand_remote_item(mut item: syn::Item) -> Option<String> {
    let attrs = match &mut item {
        syn::Item::Fn(f) => &mut f.attrs,
        syn::Item::Struct(s) => &mut s.attrs,
        syn::Item::Impl(i) => &mut i.attrs,
        _ => return None,
    };
    let at = attrs.iter().position(is_remote_attr)?;
    let attr = attrs.remove(at);
    let args = match attr.meta {
        syn::Meta::Path(_) => TokenStream::new(),
        syn::Meta::List(list) => list.tokens,
        syn::Meta::NameValue(_) => return None,
    };
    let expanded = ray_codegen::expand(args, item.into_token_stream(), ray_codegen::Mode::Cell);
    Some(pretty(expanded))
}

/// Formats generated items, so errors in them are readable.
fn pretty(tokens: TokenStream) -> String {
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(_) => tokens.to_string(),
    }
}

/// Rewrites `.await` that is not inside an async block, closure or nested item.
#[derive(Default)]
struct TopLevelAwait {
    rewritten: bool,
}

impl VisitMut for TopLevelAwait {
    fn visit_expr_mut(&mut self, expr: &mut syn::Expr) {
        match expr {
            syn::Expr::Async(_) | syn::Expr::Closure(_) => {}
            syn::Expr::Await(aw) => {
                self.visit_expr_mut(&mut aw.base);
                let base = &aw.base;
                *expr = syn::parse2(quote!(::ray::__private::AwaitInCell(#base).wait_in_cell())).expect("valid call");
                self.rewritten = true;
            }
            _ => syn::visit_mut::visit_expr_mut(self, expr),
        }
    }

    fn visit_item_mut(&mut self, _: &mut syn::Item) {}
}

/// Maps proc-macro2 line/column positions back to byte offsets.
struct LineOffsets {
    starts: Vec<usize>,
    text: String,
}

impl LineOffsets {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                starts.push(i + 1);
            }
        }
        LineOffsets { starts, text: text.to_string() }
    }

    /// Byte offset of a position (lines from 1, columns in chars).
    fn offset(&self, at: LineColumn) -> usize {
        let line_start = self.starts.get(at.line.saturating_sub(1)).copied().unwrap_or(self.text.len());
        let line = &self.text[line_start..];
        line_start + line.char_indices().nth(at.column).map(|(i, _)| i).unwrap_or(line.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_code_is_left_alone() {
        assert_eq!(expand_cell("let x = 1;\nx + 1"), None);
        assert_eq!(expand_cell(":vars"), None);
    }

    #[test]
    fn remote_functions_become_plain_rust_with_exported_trampolines() {
        let out = expand_cell("#[ray::remote]\nfn square(x: u64) -> u64 { x * x }\nlet r = square.remote(3);").unwrap();
        assert!(out.contains("struct square;"), "{out}");
        assert!(out.contains("__ray_task_square"), "{out}");
        assert!(out.contains("no_mangle"), "{out}");
        assert!(!out.contains("#[ray::remote]"), "{out}");
        assert!(out.ends_with("let r = square.remote(3);"), "{out}");
    }

    #[test]
    fn actor_structs_and_impls_expand() {
        let out = expand_cell(
            "#[ray::remote]\nstruct Counter { n: u64 }\n#[ray::remote]\nimpl Counter {\n fn new() -> Self { Counter { n: 0 } }\n fn inc(&mut self) -> u64 { self.n += 1; self.n }\n}",
        )
        .unwrap();
        assert!(out.contains("CounterHandle"), "{out}");
        assert!(out.contains("__ray_actor_Counter_inc"), "{out}");
    }

    #[test]
    fn top_level_await_blocks_but_async_blocks_keep_theirs() {
        let out = expand_cell("let v = square.remote(3).await?;\nlet f = async { g().await };").unwrap();
        assert!(out.contains("AwaitInCell"), "{out}");
        assert!(out.contains("g().await"), "{out}");
        assert_eq!(out.matches("AwaitInCell").count(), 1, "{out}");
    }

    #[test]
    fn generated_lines_never_look_like_commands() {
        for cell in ["#[ray::remote]\nfn f(x: u64) -> u64 { x }", "f.remote(1).await"] {
            let out = expand_cell(cell).unwrap();
            for line in out.lines() {
                assert!(!line.trim_start_matches(' ').starts_with(':'), "{line:?} in {out}");
            }
        }
    }

    #[test]
    fn commands_stay_and_untouched_statements_keep_their_text() {
        let out = expand_cell(":vars\nlet  spaced   =  1 ;\n#[remote]\nfn f() {}").unwrap();
        assert!(out.starts_with(":vars\nlet  spaced   =  1 ;\n"), "{out}");
    }

    #[test]
    fn unparsable_cells_go_to_evcxr_unchanged() {
        assert_eq!(expand_cell("let x = ;"), None);
    }
}
