//! Compile errors in the user's terms.
//!
//! evcxr compiles a cell inside code of its own, after the session has expanded
//! `#[ray::remote]` items and top-level `.await` into more code, and rustc's spans
//! and messages can name any of it: a `const` missing its `;` is "expected `;`,
//! found keyword `use`", where the `use` is evcxr's. evcxr already maps spans in
//! its own code away (they come without a span); this module maps the rest from
//! the expanded code back to the cell through the expansion's [`SourceMap`], and
//! leaves out labels, notes and words that only make sense in code the user never
//! saw. What remains points at lines and columns of the cell.

use crate::expand::SourceMap;
use ariadne::{ColorGenerator, Label, Report, ReportKind, Source};
use evcxr::CompilationError;
use std::ops::Range;

/// The name reports give the cell.
const CELL: &str = "cell";

/// Names only code the session or evcxr adds has; a note that uses one explains
/// that code, not the user's.
const ADDED_NAMES: &[&str] =
    &["__ray_", "__private", "__trampoline", "evcxr", "ray::prelude", "wait_in_cell", "TaskArgs"];

/// Whether `text` speaks of code the user never wrote.
pub(crate) fn mentions_added_code(text: &str) -> bool {
    ADDED_NAMES.iter().any(|name| text.contains(name))
}

/// A span as evcxr reports it: 1-based lines and char columns, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineSpan {
    pub start_line: usize,
    pub start_column: usize,
    pub end_line: usize,
    pub end_column: usize,
}

/// Byte offset of a 1-based line and char column in `text`, if it is there.
fn offset_of(text: &str, line: usize, column: usize) -> Option<usize> {
    let line_start = if line <= 1 { 0 } else { text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)? };
    let rest = &text[line_start..];
    let line_text = &rest[..rest.find('\n').unwrap_or(rest.len())];
    let column = column.max(1) - 1;
    let within = line_text.char_indices().map(|(i, _)| i).chain([line_text.len()]).nth(column)?;
    Some(line_start + within)
}

/// The char range of the cell that a span in the expanded `code` came from, and
/// whether it is what the user wrote there (not code made from it).
pub(crate) fn span_in_cell(span: LineSpan, code: &str, map: &SourceMap, cell: &str) -> Option<(Range<usize>, bool)> {
    let start = offset_of(code, span.start_line, span.start_column)?;
    let end = offset_of(code, span.end_line, span.end_column)?.max(start);
    let (bytes, exact) = map.to_cell(start..end)?;
    let chars = |byte: usize| cell[..byte.min(cell.len())].chars().count();
    Some((chars(bytes.start)..chars(bytes.end), exact))
}

/// The message, without a token rustc found in code the user never saw (when
/// what it found is not in the cell, it ran past the cell's end).
fn message_for_user(message: &str, found_in_cell: bool) -> String {
    match message.split_once(", found ") {
        Some((expected, _)) if !found_in_cell => format!("{expected} at the end of the cell"),
        _ => message.to_string(),
    }
}

/// One compile error as a report on the cell (with ANSI colours), or as a line
/// when none of it points into the cell.
pub(crate) fn render(error: &CompilationError, code: &str, map: &SourceMap, cell: &str) -> String {
    // (where, what, primary, on the user's own text)
    let mut labels: Vec<(Range<usize>, String, bool, bool)> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for message in error.spanned_messages().iter().chain(error.help_spanned()) {
        if message.label.is_empty() || mentions_added_code(&message.label) {
            continue;
        }
        let span = message.span.map(|s| LineSpan {
            start_line: s.start_line,
            start_column: s.start_column,
            end_line: s.end_line,
            end_column: s.end_column,
        });
        match span.and_then(|s| span_in_cell(s, code, map, cell)) {
            Some((range, exact)) => labels.push((range, message.label.clone(), message.is_primary, exact)),
            // "defined here" and the like mean nothing without the place.
            None if message.span.is_none() && !message.label.ends_with(" here") => notes.push(message.label.clone()),
            // A label on code that has no place in the cell says nothing there.
            None => {}
        }
    }
    // rustc labels the token it found where it expected another; without that
    // label in the cell, the token was in code after it.
    let found_in_cell = labels.iter().any(|l| l.1 == "unexpected token");
    let message = error.message();
    let text = message_for_user(&message, found_in_cell);
    for label in &mut labels {
        if let Some(rest) = label.1.strip_suffix(message.as_str()) {
            label.1 = format!("{rest}{text}");
        }
    }
    // Code made from a whole item maps to all of it; a label there is worth
    // showing only when nothing points at the user's own text.
    if labels.iter().any(|l| l.3) {
        labels.retain(|l| l.3);
    }
    if labels.is_empty() && text != message {
        // Rustc ran into code after the cell: the cell ends too soon.
        let end = cell.trim_end().chars().count();
        labels.push((end..end, "the cell ends here".to_string(), true, true));
    }
    let primary = labels.iter().find(|l| l.2).or(labels.first()).map(|l| l.0.clone());
    let Some(primary) = primary else {
        let mut out = format!("Error: {text}\n");
        for note in notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        return out;
    };
    let mut colors = ColorGenerator::new();
    let mut report = Report::build(ReportKind::Error, (CELL.to_string(), primary)).with_message(text);
    if let Some(code) = error.code() {
        report = report.with_code(code);
    }
    for (range, label, _, _) in labels {
        report = report.with_label(Label::new((CELL.to_string(), range)).with_message(label).with_color(colors.next()));
    }
    if !notes.is_empty() {
        report = report.with_note(notes.join("\n"));
    }
    let mut buf = Vec::new();
    match report.finish().write((CELL.to_string(), Source::from(cell.to_string())), &mut buf) {
        Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
        Err(_) => format!("Error: {}\n", error.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expand::expand_cell_mapped;

    fn span(start_line: usize, start_column: usize, end_line: usize, end_column: usize) -> LineSpan {
        LineSpan { start_line, start_column, end_line, end_column }
    }

    /// The span of the first `needle` in `code`, as evcxr would give it.
    fn span_of(code: &str, needle: &str) -> LineSpan {
        let at = code.find(needle).unwrap_or_else(|| panic!("{needle:?} not in {code}"));
        let line = code[..at].matches('\n').count() + 1;
        let line_start = code[..at].rfind('\n').map_or(0, |i| i + 1);
        let column = code[line_start..at].chars().count() + 1;
        span(line, column, line, column + needle.chars().count())
    }

    #[test]
    fn spans_in_unexpanded_cells_stay_where_they_are() {
        let cell = "let a = 1;\nlet b: u32 = \"x\";";
        let map = SourceMap::identity(cell.len());
        let (range, _) = span_in_cell(span_of(cell, "\"x\""), cell, &map, cell).unwrap();
        assert_eq!(cell.chars().skip(range.start).take(range.len()).collect::<String>(), "\"x\"");
    }

    #[test]
    fn spans_in_an_expanded_remote_function_point_at_what_the_user_typed() {
        let cell = "let before = 1;\n#[ray::remote]\nfn doubled(n: u32) -> u32 {\n    n * \"two\"\n}\nlet r = doubled.remote(2);";
        let expanded = expand_cell_mapped(cell).unwrap();
        for needle in ["\"two\"", "u32", "doubled"] {
            let at = span_of(&expanded.code, needle);
            let (range, exact) = span_in_cell(at, &expanded.code, &expanded.map, cell).unwrap();
            assert!(exact, "{needle}");
            let text: String = cell.chars().skip(range.start).take(range.len()).collect();
            assert_eq!(text, needle, "{needle} in\n{}", expanded.code);
        }
        // Code the expansion added maps to the remote function it came from.
        let added = span_of(&expanded.code, "__ray_task_doubled");
        let (range, exact) = span_in_cell(added, &expanded.code, &expanded.map, cell).unwrap();
        assert!(!exact);
        let item = cell.find("#[ray::remote]").unwrap()..cell.find("\nlet r").unwrap();
        assert!(item.start <= range.start && range.end <= item.end, "{range:?} outside {item:?}");
        // Untouched statements after the expansion keep their place.
        let (range, _) = span_in_cell(span_of(&expanded.code, "let r"), &expanded.code, &expanded.map, cell).unwrap();
        assert_eq!(range.start, cell.find("let r").unwrap());
    }

    #[test]
    fn a_span_at_the_very_end_of_the_cell_maps_there() {
        let cell = "const LIMIT: u32 = 10";
        let map = SourceMap::identity(cell.len());
        let end = span(1, 22, 1, 22);
        assert_eq!(span_in_cell(end, cell, &map, cell), Some((21..21, true)));
    }

    #[test]
    fn a_token_found_in_added_code_becomes_the_end_of_the_cell() {
        assert_eq!(message_for_user("expected `;`, found keyword `use`", false), "expected `;` at the end of the cell");
        assert_eq!(message_for_user("expected `;`, found keyword `let`", true), "expected `;`, found keyword `let`");
        assert_eq!(message_for_user("mismatched types", false), "mismatched types");
    }

    #[test]
    fn notes_about_added_code_are_recognised() {
        assert!(mentions_added_code("required by a bound in `ray::__private::TaskArgs::arg`"));
        assert!(mentions_added_code("consider importing `evcxr_variable_store`"));
        assert!(!mentions_added_code("the trait `Serialize` is not implemented for `NotSer`"));
    }
}
