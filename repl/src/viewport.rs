//! What the terminal shows while a cell runs.
//!
//! A cell that blocks on `get`, `wait` or `.await` would otherwise leave a person
//! staring at a frozen prompt. While the driver reports progress, an inline
//! ratatui viewport under the output shows one bar per function — done, running
//! and pending — and the elapsed time. Output keeps scrolling above it (cell
//! prints, and worker lines prefixed `(name pid=N)`), and when the cell ends the
//! viewport is erased so the screen reads like a plain transcript.
//!
//! The terminal is in raw mode for the whole cell, so that Ctrl-C arrives as a key
//! (to interrupt the cell, not kill the REPL) and typing does not scribble over the
//! viewport. On a non-terminal, output is printed as it comes and nothing is drawn.

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal;
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};
use ratatui::{Terminal, TerminalOptions, Viewport};
use ray_session::protocol::Progress;
use std::io::{Stdout, Write};
use std::time::Duration;

/// Rows of the progress viewport at most: a header and this many functions.
const MAX_FUNCTION_ROWS: usize = 6;
const BAR_WIDTH: usize = 24;

/// The terminal while one cell runs.
pub struct CellView {
    tty: bool,
    raw: bool,
    inline: Option<Terminal<CrosstermBackend<Stdout>>>,
    progress: Option<Progress>,
    /// What the person typed ahead while the cell ran; the next prompts get it.
    typeahead: String,
    /// The terminal could not host a viewport (it did not say where the cursor
    /// is); output still flows, without bars.
    no_viewport: bool,
}

impl CellView {
    /// Takes the terminal for a cell.
    pub fn begin() -> CellView {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let raw = tty && terminal::enable_raw_mode().is_ok();
        CellView { tty, raw, inline: None, progress: None, typeahead: String::new(), no_viewport: false }
    }

    /// Prints a line of output above the viewport.
    pub fn line(&mut self, text: &str, style: Style) {
        if let Some(term) = &mut self.inline {
            let line = Line::from(Span::styled(text.to_string(), style));
            let width = term.size().map(|s| s.width.max(1)).unwrap_or(80) as usize;
            let height = (text.chars().count().max(1)).div_ceil(width) as u16;
            let _ = term.insert_before(height, |buf| {
                let area = buf.area;
                Paragraph::new(line).wrap(ratatui::widgets::Wrap { trim: false }).render(area, buf);
            });
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.raw {
            let styled = match style.fg {
                Some(Color::Red) => format!("\x1b[31m{text}\x1b[0m"),
                Some(Color::DarkGray) => format!("\x1b[2m{text}\x1b[0m"),
                _ => text.to_string(),
            };
            let _ = write!(out, "{styled}\r\n");
        } else {
            let _ = writeln!(out, "{text}");
        }
        let _ = out.flush();
    }

    /// Shows the latest progress; opens the viewport on the first report.
    pub fn progress(&mut self, progress: Progress) {
        if !self.tty || self.no_viewport {
            return;
        }
        if progress.finished {
            self.progress = None;
            self.close_viewport();
            return;
        }
        if self.inline.is_none() {
            let rows = progress.rows.len().clamp(1, MAX_FUNCTION_ROWS) as u16;
            let options = TerminalOptions { viewport: Viewport::Inline(rows + 1) };
            match Terminal::with_options(CrosstermBackend::new(std::io::stdout()), options) {
                Ok(term) => self.inline = Some(term),
                Err(_) => {
                    self.no_viewport = true;
                    return;
                }
            }
        }
        self.progress = Some(progress);
        self.draw();
    }

    fn draw(&mut self) {
        let (Some(term), Some(progress)) = (&mut self.inline, &self.progress) else { return };
        let lines = progress_lines(progress, MAX_FUNCTION_ROWS);
        let _ = term.draw(|frame| frame.render_widget(Paragraph::new(lines), frame.area()));
    }

    /// Erases the viewport and puts the cursor where it began.
    fn close_viewport(&mut self) {
        if let Some(mut term) = self.inline.take() {
            let _ = term.clear();
            let top = term.get_frame().area().as_position();
            let _ = term.set_cursor_position(top);
            let _ = std::io::stdout().flush();
        }
    }

    /// Reads every key typed so far, keeping them for the next prompt; returns
    /// whether one of them was Ctrl-C.
    pub fn read_keys(&mut self) -> bool {
        let mut interrupt = false;
        while self.raw && event::poll(Duration::ZERO).unwrap_or(false) {
            match event::read() {
                Ok(Event::Key(k))
                    if k.kind == KeyEventKind::Press
                        && k.code == KeyCode::Char('c')
                        && k.modifiers.contains(KeyModifiers::CONTROL) =>
                {
                    interrupt = true;
                }
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => match k.code {
                    KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => self.typeahead.push(c),
                    KeyCode::Enter => self.typeahead.push('\n'),
                    KeyCode::Tab => self.typeahead.push('\t'),
                    KeyCode::Backspace => {
                        self.typeahead.pop();
                    }
                    _ => {}
                },
                Ok(Event::Resize(..)) => {
                    if let Some(term) = &mut self.inline {
                        let _ = term.autoresize();
                    }
                    self.draw();
                }
                _ => {}
            }
        }
        interrupt
    }

    /// Gives the terminal back for the prompt, with what was typed meanwhile.
    pub fn end(mut self) -> String {
        self.close_viewport();
        if self.raw {
            let _ = terminal::disable_raw_mode();
            self.raw = false;
        }
        std::mem::take(&mut self.typeahead)
    }
}

impl Drop for CellView {
    fn drop(&mut self) {
        if self.raw {
            let _ = terminal::disable_raw_mode();
        }
    }
}

/// The viewport's text: a header, then a bar per function.
pub fn progress_lines(progress: &Progress, max_rows: usize) -> Vec<Line<'static>> {
    let (done, running, pending) = progress.totals();
    let total = done + running + pending;
    let mut lines = vec![Line::from(vec![
        Span::styled("⏳ waiting ", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!("{:.1}s", progress.elapsed_ms as f64 / 1000.0)),
        Span::raw(format!("  {done}/{total} done")),
        Span::styled("  Ctrl-C cancels", Style::default().fg(Color::DarkGray)),
    ])];
    let name_width = progress.rows.iter().map(|r| r.name.chars().count()).max().unwrap_or(0).min(28);
    let shown = if progress.rows.len() > max_rows { max_rows - 1 } else { progress.rows.len() };
    for row in progress.rows.iter().take(shown) {
        let total = row.total().max(1);
        let cells = |n: usize| n * BAR_WIDTH / total;
        let (d, f, r) = (cells(row.done), cells(row.failed), cells(row.running));
        let p = BAR_WIDTH.saturating_sub(d + f + r);
        let mut spans = vec![
            Span::raw(format!("  {:<name_width$} ", truncate(&row.name, name_width))),
            Span::styled("█".repeat(d), Style::default().fg(Color::Green)),
            Span::styled("█".repeat(f), Style::default().fg(Color::Red)),
            Span::styled("█".repeat(r), Style::default().fg(Color::Yellow)),
            Span::styled("░".repeat(p), Style::default().fg(Color::DarkGray)),
            Span::raw(format!(" {} done", row.done)),
        ];
        if row.failed > 0 {
            spans.push(Span::raw(" · ").dark_gray());
            spans.push(Span::styled(format!("{} failed", row.failed), Style::default().fg(Color::Red)));
        }
        spans.extend([
            Span::raw(" · ").dark_gray(),
            Span::styled(format!("{} running", row.running), Style::default().fg(Color::Yellow)),
            Span::raw(" · ").dark_gray(),
            Span::raw(format!("{} pending", row.pending)),
        ]);
        lines.push(Line::from(spans));
    }
    if shown < progress.rows.len() {
        lines.push(Line::from(format!("  … and {} more functions", progress.rows.len() - shown)).dark_gray());
    }
    lines
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        s.chars().take(width.saturating_sub(1)).chain(['…']).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_session::protocol::ProgressRow;

    fn text(lines: &[Line<'_>]) -> Vec<String> {
        lines.iter().map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect()).collect()
    }

    #[test]
    fn one_bar_per_function_with_counts() {
        let p = Progress {
            elapsed_ms: 2500,
            rows: vec![
                ProgressRow { name: "retrieve".into(), done: 2, failed: 0, running: 2, pending: 4 },
                ProgressRow { name: "Tracker.inc".into(), done: 1, failed: 0, running: 0, pending: 0 },
            ],
            finished: false,
        };
        let t = text(&progress_lines(&p, 6));
        assert!(t[0].contains("2.5s") && t[0].contains("3/9 done"), "{t:?}");
        assert!(t[1].contains("retrieve") && t[1].contains("2 done") && t[1].contains("2 running"), "{t:?}");
        assert!(t[1].contains("4 pending"), "{t:?}");
        assert_eq!(t[1].matches('█').count() + t[1].matches('░').count(), BAR_WIDTH, "{t:?}");
        assert!(t[2].contains("Tracker.inc"), "{t:?}");
    }

    #[test]
    fn many_functions_are_summarised() {
        let rows = (0..10)
            .map(|i| ProgressRow { name: format!("f{i}"), done: 0, failed: 0, running: 1, pending: 0 })
            .collect();
        let t = text(&progress_lines(&Progress { elapsed_ms: 0, rows, finished: false }, 6));
        assert_eq!(t.len(), 7, "{t:?}");
        assert!(t[6].contains("5 more"), "{t:?}");
    }
}
