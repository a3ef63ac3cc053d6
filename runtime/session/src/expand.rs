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
//! Statements the session does not change keep their original text. Rewritten ones
//! are printed token by token, and the [`SourceMap`] records where each token the
//! user wrote went, so a compile error in expanded code can be pointed back at the
//! cell; what the session added maps to the statement it came from.

use proc_macro2::{Delimiter, LineColumn, Spacing, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use std::ops::Range;
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;

/// The cell rewritten for evcxr; `None` when nothing needed rewriting.
pub fn expand_cell(cell: &str) -> Option<String> {
    expand_cell_mapped(cell).map(|e| e.code)
}

/// A cell as evcxr should see it, and where its code came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// The code for evcxr.
    pub code: String,
    /// From positions in `code` back to positions in the cell.
    pub map: SourceMap,
}

/// Where each byte of expanded code came from in the cell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceMap {
    /// Ranges of the expanded code and their origin, in no particular order;
    /// where they nest, the innermost one is the most precise.
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    code: Range<usize>,
    cell: Range<usize>,
    /// The code is the cell's text unchanged, byte for byte.
    exact: bool,
}

impl SourceMap {
    /// The map of code that is the cell itself.
    pub fn identity(len: usize) -> SourceMap {
        SourceMap { pieces: vec![Piece { code: 0..len, cell: 0..len, exact: true }] }
    }

    fn verbatim(&mut self, code_start: usize, cell: Range<usize>) {
        if !cell.is_empty() {
            self.pieces.push(Piece { code: code_start..code_start + cell.len(), cell, exact: true });
        }
    }

    /// The cell range that byte range `code` of the expanded code came from, and
    /// whether it is the same text: where the user's code went through unchanged,
    /// that text, else the user's code it was made from. `None` for code with no
    /// origin in the cell.
    pub fn to_cell(&self, code: Range<usize>) -> Option<(Range<usize>, bool)> {
        let start = self.innermost(code.start, false).or_else(|| self.innermost(code.start, true))?;
        if code.is_empty() {
            let at = if start.exact { start.cell.start + (code.start - start.code.start) } else { start.cell.start };
            return Some((at..at, start.exact));
        }
        let end = self.innermost(code.end, true);
        let from = if start.exact { start.cell.start + (code.start - start.code.start) } else { start.cell.start };
        let to = match end {
            Some(end) if end.exact => end.cell.start + (code.end - end.code.start),
            Some(end) => end.cell.end,
            None => start.cell.end,
        };
        let exact = start.exact && end.is_none_or(|e| e.exact);
        Some((if to > from { from..to } else { from..start.cell.end.max(from) }, exact))
    }

    /// The smallest piece holding byte `at` (as an end, `at` may be its end).
    fn innermost(&self, at: usize, end: bool) -> Option<&Piece> {
        self.pieces
            .iter()
            .filter(|p| if end { p.code.start < at && at <= p.code.end } else { p.code.start <= at && at < p.code.end })
            .min_by_key(|p| p.code.len())
    }
}

/// [`expand_cell`], with the map back to the cell.
pub fn expand_cell_mapped(cell: &str) -> Option<Expanded> {
    let (commands, code, code_lines) = split_commands(cell);
    let wrapped = format!("{{\n{code}\n}}");
    let block: syn::Block = syn::parse_str(&wrapped).ok()?;
    let offsets = LineOffsets::new(&wrapped);
    // Tokens parsed from the cell join with this; others (generated, or parsed by
    // the code generator from strings of its own) do not.
    let outer = block.brace_token.span.join();
    // Byte offsets in `wrapped` to byte offsets in the cell.
    let cell_offset = |at: usize| -> usize {
        let at = at.saturating_sub(2).min(code.len());
        let line = code[..at].matches('\n').count();
        let line_start = code[..at].rfind('\n').map_or(0, |i| i + 1);
        code_lines.get(line).map_or(cell.len(), |start| start + (at - line_start))
    };
    let mut out = String::new();
    let mut map = SourceMap::default();
    let mut changed = false;
    let mut cursor = offsets.offset(block.brace_token.span.open().end());
    for stmt in block.stmts {
        let span = stmt.span();
        let (start, end) = (offsets.offset(span.start()), offsets.offset(span.end()));
        if start < cursor || end > wrapped.len() {
            return None;
        }
        push_verbatim(&mut out, &mut map, &wrapped[cursor..start], cursor, &cell_offset);
        match rewrite(stmt) {
            Some(tokens) => {
                let origin = cell_offset(start)..cell_offset(end);
                let printed = Printer::print(&tokens, out.len(), &wrapped, outer, &cell_offset);
                map.pieces.push(Piece { code: out.len()..out.len() + printed.text.len(), cell: origin, exact: false });
                map.pieces.extend(printed.pieces);
                out.push_str(&printed.text);
                changed = true;
            }
            None => push_verbatim(&mut out, &mut map, &wrapped[start..end], start, &cell_offset),
        }
        cursor = end;
    }
    let close = offsets.offset(block.brace_token.span.close().start());
    if close >= cursor {
        push_verbatim(&mut out, &mut map, &wrapped[cursor..close], cursor, &cell_offset);
    }
    if !changed {
        return None;
    }
    // The wrapper's first and last newlines are not the cell's.
    let body_start = usize::from(out.starts_with('\n'));
    let body_end = out.len() - usize::from(out.len() > body_start && out.ends_with('\n'));
    let prefix: usize = commands.iter().map(|(l, _)| l.len() + 1).sum();
    let mut text: String = commands.iter().map(|(l, _)| format!("{l}\n")).collect();
    let mut shifted = SourceMap { pieces: commands_pieces(&commands) };
    for piece in map.pieces {
        let (from, to) = (piece.code.start.max(body_start), piece.code.end.min(body_end));
        if from >= to {
            continue;
        }
        let skip = from - piece.code.start;
        let cell =
            if piece.exact { piece.cell.start + skip..piece.cell.start + skip + (to - from) } else { piece.cell };
        shifted.pieces.push(Piece {
            code: prefix + from - body_start..prefix + to - body_start,
            cell,
            exact: piece.exact,
        });
    }
    text.push_str(&out[body_start..body_end]);
    Some(Expanded { code: text, map: shifted })
}

/// Each command line, and its newline, as the cell has them.
fn commands_pieces(commands: &[(String, usize)]) -> Vec<Piece> {
    let mut at = 0;
    commands
        .iter()
        .map(|(line, start)| {
            let piece = Piece { code: at..at + line.len(), cell: *start..start + line.len(), exact: true };
            at += line.len() + 1;
            piece
        })
        .collect()
}

/// Text of `wrapped` at `from` that goes to the output unchanged, mapped line by
/// line (the cell's command lines are not in `wrapped`).
fn push_verbatim(
    out: &mut String,
    map: &mut SourceMap,
    text: &str,
    from: usize,
    cell_offset: &impl Fn(usize) -> usize,
) {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        map.verbatim(out.len() + at, cell_offset(from + at)..cell_offset(from + at) + line.len());
        at += line.len();
    }
    out.push_str(text);
}

/// evcxr's `:commands` are lines of their own; they stay first, in order. Returns
/// them with their offsets in the cell, the code, and where each of its lines
/// starts in the cell.
fn split_commands(cell: &str) -> (Vec<(String, usize)>, String, Vec<usize>) {
    let mut commands = Vec::new();
    let mut code = String::new();
    let mut code_lines = Vec::new();
    let mut at = 0;
    for line in cell.split_inclusive('\n') {
        let text = line.strip_suffix('\n').unwrap_or(line);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.trim_start().starts_with(':') {
            commands.push((text.to_string(), at));
        } else {
            code_lines.push(at);
            code.push_str(text);
            code.push('\n');
        }
        at += line.len();
    }
    let code = code.strip_suffix('\n').unwrap_or(&code).to_string();
    (commands, code, code_lines)
}

/// The new tokens of a statement, if it needs them.
fn rewrite(stmt: syn::Stmt) -> Option<TokenStream> {
    match stmt {
        syn::Stmt::Item(item) => expand_remote_item(item),
        mut other => {
            let mut awaits = TopLevelAwait::default();
            awaits.visit_stmt_mut(&mut other);
            awaits.rewritten.then(|| other.to_token_stream())
        }
    }
}

fn is_remote_attr(attr: &syn::Attribute) -> bool {
    let segments: Vec<String> = attr.path().segments.iter().map(|s| s.ident.to_string()).collect();
    matches!(segments.iter().map(String::as_str).collect::<Vec<_>>().as_slice(), ["ray", "remote"] | ["remote"])
}

fn expand_remote_item(mut item: syn::Item) -> Option<TokenStream> {
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
    Some(ray_codegen::expand(args, item.into_token_stream(), ray_codegen::Mode::Cell))
}

/// Whether a space goes between printed text ending `before` and the token `word`:
/// not before `;`, `,`, `.`, `?` and closing brackets, nor after opening ones, `.`,
/// `#` and `::`, nor between a name and the `(` or `[` that follows it.
fn spaced(before: &str, word: &str) -> bool {
    let last = before.chars().last().unwrap_or(' ');
    let first = word.chars().next().unwrap_or(' ');
    !(matches!(first, ';' | ',' | '.' | '?' | ')' | ']')
        || matches!(last, '(' | '[' | '.' | '#')
        || before.ends_with("::")
        || (matches!(first, '(' | '[') && (last.is_alphanumeric() || matches!(last, '_' | '>' | ')' | '!'))))
}

/// Prints tokens as Rust source, a line per statement or item, recording where each
/// token the user wrote went.
struct Printer<'a, F> {
    text: String,
    pieces: Vec<Piece>,
    /// Where the printed text starts in the expanded code.
    base: usize,
    wrapped: &'a str,
    outer: proc_macro2::Span,
    cell_offset: &'a F,
    /// The last token printed asks for none between it and the next (`::`, `'a`).
    joint: bool,
}

impl<'a, F: Fn(usize) -> usize> Printer<'a, F> {
    fn print(
        tokens: &TokenStream,
        base: usize,
        wrapped: &'a str,
        outer: proc_macro2::Span,
        cell_offset: &'a F,
    ) -> Printer<'a, F> {
        let mut printer =
            Printer { text: String::new(), pieces: Vec::new(), base, wrapped, outer, cell_offset, joint: false };
        printer.stream(tokens.clone());
        printer
    }

    fn stream(&mut self, tokens: TokenStream) {
        for token in tokens {
            match token {
                TokenTree::Group(group) => {
                    let (open, close) = match group.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::None => ("", ""),
                    };
                    self.word(open, group.span_open());
                    if group.delimiter() == Delimiter::Brace {
                        self.newline();
                    }
                    self.stream(group.stream());
                    if group.delimiter() == Delimiter::Brace {
                        self.newline();
                    }
                    self.word(close, group.span_close());
                    if group.delimiter() == Delimiter::Brace {
                        self.newline();
                    }
                }
                TokenTree::Punct(punct) => {
                    let c = punct.as_char();
                    // The first `:` of a path's `::` sticks to what comes before.
                    if c == ':' && punct.spacing() == Spacing::Joint && !self.text.ends_with(':') {
                        self.joint = true;
                    }
                    self.word(&c.to_string(), punct.span());
                    self.joint = punct.spacing() == Spacing::Joint || c == '\'';
                    if c == ';' {
                        self.newline();
                    }
                }
                TokenTree::Ident(ident) => self.word(&ident.to_string(), ident.span()),
                TokenTree::Literal(literal) => self.word(&literal.to_string(), literal.span()),
            }
        }
    }

    /// Appends one token, and the piece that maps it to the cell if the user wrote it.
    fn word(&mut self, word: &str, span: proc_macro2::Span) {
        if word.is_empty() {
            return;
        }
        if self.text.is_empty() || self.text.ends_with('\n') {
            // evcxr takes a line that starts with spaces and `:` for a command.
            if word.starts_with(':') {
                self.text.push('\t');
            }
        } else if !self.joint && spaced(&self.text, word) {
            self.text.push(' ');
        }
        self.joint = false;
        let at = self.base + self.text.len();
        let range = span.byte_range();
        let from_cell = self.outer.join(span).is_some() && !range.is_empty() && range.end <= self.wrapped.len();
        if from_cell {
            let cell = (self.cell_offset)(range.start)..(self.cell_offset)(range.end);
            let exact = self.wrapped.get(range.clone()) == Some(word);
            self.pieces.push(Piece { code: at..at + word.len(), cell, exact });
        }
        self.text.push_str(word);
    }

    fn newline(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
        }
        self.joint = false;
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A statement of a cell, some of which the session rewrites.
        fn statement() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z]{1,5}".prop_map(|n| format!("let v_{n} = 1;")),
                ("[a-z]{1,5}", "[a-z]{1,5}")
                    .prop_map(|(f, a)| format!("#[ray::remote]\nfn f_{f}(a_{a}: u64) -> u64 {{\n    a_{a} * 2\n}}")),
                "[a-z]{1,5}".prop_map(|n| format!("#[ray::remote]\nstruct S_{n} {{ n: u64 }}")),
                "[a-z]{1,5}".prop_map(|n| format!("let w_{n} = f.remote(1).await?;")),
                Just(":vars".to_string()),
                Just("// a comment".to_string()),
            ]
        }

        proptest! {
            #[test]
            fn every_exact_piece_is_the_cells_text_and_every_byte_maps_into_the_cell(
                statements in prop::collection::vec(statement(), 1..6),
                separator in prop::sample::select(vec!["\n", "\n\n", " "]),
            ) {
                let cell = statements.join(separator);
                let Some(expanded) = expand_cell_mapped(&cell) else { return Ok(()) };
                for piece in &expanded.map.pieces {
                    prop_assert!(piece.cell.end <= cell.len(), "{:?} beyond the cell", piece);
                    if piece.exact {
                        prop_assert_eq!(&expanded.code[piece.code.clone()], &cell[piece.cell.clone()]);
                    }
                }
                for at in 0..expanded.code.len() {
                    if let Some((range, _)) = expanded.map.to_cell(at..at + 1) {
                        prop_assert!(range.start <= range.end && range.end <= cell.len());
                    }
                }
                // Every statement the session left alone is found where it was.
                for statement in statements.iter().filter(|s| s.starts_with("let v_")) {
                    let at = expanded.code.find(statement.as_str()).expect("kept");
                    let (range, exact) = expanded.map.to_cell(at..at + statement.len()).expect("mapped");
                    prop_assert!(exact);
                    prop_assert_eq!(&cell[range], statement.as_str());
                }
            }
        }
    }
}
