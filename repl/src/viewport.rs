//! What the terminal shows while a cell runs.
//!
//! A cell that blocks on `get`, `wait` or `.await` would otherwise leave a person
//! staring at a frozen prompt. While the driver reports progress, an inline
//! ratatui viewport under the output shows one bar per function — done, running
//! and pending — and the elapsed time. Output keeps scrolling above it (cell
//! prints, and worker lines prefixed `(name pid=N)`), and when the cell ends the
//! viewport is erased so the screen reads like a plain transcript.
//!
//! The terminal is in raw mode for the whole cell, so typing does not scribble over
//! the viewport, and keys typed meanwhile are not read: they wait in the terminal,
//! in order and with their Enters, for the next prompt, which takes them as if they
//! were typed there (as IPython does). Only Ctrl-C acts at once, as a signal (see
//! [`catch_interrupts`]), so the cell can be interrupted without reading, and so
//! losing, what was typed before it. The one read of the terminal while a cell
//! runs is the viewport asking where the cursor is when it opens (after that its
//! backend keeps track, see [`Tracked`]); keys that read takes are handed back by
//! [`CellView::end`]. On a non-terminal, output is printed as it comes and nothing
//! is drawn.

use ratatui::backend::{Backend, ClearType, CrosstermBackend, WindowSize};
use ratatui::buffer::Cell;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal;
use ratatui::layout::{Position, Size};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};
use ratatui::{Terminal, TerminalOptions, Viewport};
use ray_session::protocol::Progress;
use std::io::{Stdout, Write};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

/// Ctrl-C presses the relay has reported and no cell has taken yet.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);
/// The relay's process group, once it runs.
static RELAY_GROUP: AtomicI32 = AtomicI32::new(0);

/// Set in the environment of the Ctrl-C relay process (see [`catch_interrupts`]).
pub const RELAY_ENV: &str = "RAYREPL_CTRL_C_RELAY";

/// Makes Ctrl-C while a cell runs a request to interrupt the cell, without the
/// REPL reading the terminal. The terminal turns Ctrl-C into SIGINT for its
/// foreground process group, and the REPL's own group holds the compilers evcxr
/// runs: a rustc stopped by SIGINT leaves cargo's incremental state broken, and
/// later cells fail to link. So a small relay process with a group of its own is
/// the terminal's foreground group while a cell runs; it reports each SIGINT on a
/// pipe. The REPL switches groups from the background, which is why it ignores
/// SIGTTOU; and it ignores SIGINT, which a Ctrl-C between prompt and cell sends it.
pub fn catch_interrupts() -> std::io::Result<()> {
    static RELAY: std::sync::OnceLock<std::process::Child> = std::sync::OnceLock::new();
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .env(RELAY_ENV, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut relay = command.spawn()?;
    let reports = relay.stdout.take().expect("stdout is piped");
    std::thread::Builder::new().name("ctrl-c".into()).spawn(move || {
        use std::io::Read;
        // A byte per Ctrl-C.
        let mut reports = reports;
        let mut buf = [0u8; 16];
        while let Ok(n @ 1..) = reports.read(&mut buf) {
            INTERRUPTS.fetch_add(n, Ordering::Relaxed);
        }
    })?;
    RELAY_GROUP.store(relay.id() as i32, Ordering::Relaxed);
    // Its stdin stays open while the REPL lives; the relay exits when it closes.
    let _ = RELAY.set(relay);
    // SAFETY: signal(2) with SIG_IGN, a valid disposition; no handler runs.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTTOU, libc::SIG_IGN);
    }
    Ok(())
}

/// The relay's life: write a byte for each SIGINT, until the REPL goes away.
pub fn relay_interrupts() -> ! {
    extern "C" fn report(_: libc::c_int) {
        // SAFETY: write(2) is async-signal-safe; fd 1 is the pipe to the REPL.
        unsafe {
            libc::write(libc::STDOUT_FILENO, b"i".as_ptr().cast(), 1);
        }
    }
    // SAFETY: sigaction(2) with a zeroed, then filled, struct; the handler only
    // calls write(2).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = report as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: read(2) into a buffer of the length given.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted) {
            std::process::exit(0);
        }
    }
}

/// Whether Ctrl-C signals the relay (true, while a cell runs) or is a key the REPL
/// reads (false). Raw mode is on either way; with signals on, Ctrl-\ and Ctrl-Z
/// stay plain keys, and neither typed-ahead keys nor output still on its way to
/// the screen are flushed by a Ctrl-C.
fn ctrl_c_signals_relay(on: bool) {
    let relay = RELAY_GROUP.load(Ordering::Relaxed);
    if relay <= 0 {
        return;
    }
    // SAFETY: tcgetattr/tcsetattr/tcsetpgrp on stdin, the controlling terminal
    // here, with a termios the first call filled and process groups of this
    // session; SIGTTOU is ignored, so they work from the background.
    unsafe {
        let mut mode: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(libc::STDIN_FILENO, &mut mode) != 0 {
            return;
        }
        if on {
            mode.c_lflag |= libc::ISIG | libc::NOFLSH;
            mode.c_lflag &= !libc::TOSTOP;
            // _POSIX_VDISABLE
            mode.c_cc[libc::VQUIT] = 0;
            mode.c_cc[libc::VSUSP] = 0;
        } else {
            mode.c_lflag &= !libc::ISIG;
        }
        libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &mode);
        libc::tcsetpgrp(libc::STDIN_FILENO, if on { relay } else { libc::getpgrp() });
    }
}

/// The viewport's backend. ratatui asks the terminal where the cursor is whenever
/// it clears an inline viewport, which is before every line printed above it, and
/// that read would take keys typed ahead, and stop the REPL while the Ctrl-C relay
/// has the terminal. So it asks once, when the viewport opens, and after that
/// answers from where ratatui last put the cursor.
struct Tracked {
    inner: CrosstermBackend<Stdout>,
    cursor: Option<Position>,
}

impl Backend for Tracked {
    type Error = std::io::Error;

    fn draw<'a, I>(&mut self, content: I) -> std::io::Result<()>
    where
        I: Iterator<Item = (u16, u16, &'a Cell)>,
    {
        self.inner.draw(content)
    }

    fn append_lines(&mut self, n: u16) -> std::io::Result<()> {
        self.inner.append_lines(n)?;
        let bottom = self.inner.size()?.height.saturating_sub(1);
        if let Some(cursor) = &mut self.cursor {
            cursor.y = cursor.y.saturating_add(n).min(bottom);
        }
        Ok(())
    }

    fn hide_cursor(&mut self) -> std::io::Result<()> {
        self.inner.hide_cursor()
    }

    fn show_cursor(&mut self) -> std::io::Result<()> {
        self.inner.show_cursor()
    }

    fn get_cursor_position(&mut self) -> std::io::Result<Position> {
        if let Some(cursor) = self.cursor {
            return Ok(cursor);
        }
        let cursor = self.inner.get_cursor_position()?;
        self.cursor = Some(cursor);
        Ok(cursor)
    }

    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> std::io::Result<()> {
        let position = position.into();
        self.inner.set_cursor_position(position)?;
        self.cursor = Some(position);
        Ok(())
    }

    fn clear(&mut self) -> std::io::Result<()> {
        self.inner.clear()
    }

    fn clear_region(&mut self, clear_type: ClearType) -> std::io::Result<()> {
        self.inner.clear_region(clear_type)
    }

    fn size(&self) -> std::io::Result<Size> {
        self.inner.size()
    }

    fn window_size(&mut self) -> std::io::Result<WindowSize> {
        self.inner.window_size()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Backend::flush(&mut self.inner)
    }
}

/// Rows of the progress viewport at most: a header and this many functions.
const MAX_FUNCTION_ROWS: usize = 6;
const BAR_WIDTH: usize = 24;

/// The terminal while one cell runs.
pub struct CellView {
    tty: bool,
    raw: bool,
    inline: Option<Terminal<Tracked>>,
    progress: Option<Progress>,
    /// Keys the viewport's cursor query read while the cell ran, each Enter a
    /// `\n`; the next prompts get them.
    typeahead: String,
    /// The terminal's size when the viewport last fitted itself to it.
    size: Option<(u16, u16)>,
    /// The terminal could not host a viewport (it did not say where the cursor
    /// is); output still flows, without bars.
    no_viewport: bool,
}

impl CellView {
    /// Takes the terminal for a cell.
    pub fn begin() -> CellView {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let raw = tty && std::io::IsTerminal::is_terminal(&std::io::stdin()) && terminal::enable_raw_mode().is_ok();
        // Only a Ctrl-C while this cell runs is for it.
        INTERRUPTS.store(0, Ordering::Relaxed);
        if raw {
            ctrl_c_signals_relay(true);
        }
        CellView { tty, raw, inline: None, progress: None, typeahead: String::new(), size: None, no_viewport: false }
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
            let backend = Tracked { inner: CrosstermBackend::new(std::io::stdout()), cursor: None };
            let opened = self.reading_terminal(|| Terminal::with_options(backend, options));
            match opened {
                Ok(term) => {
                    self.size = terminal::size().ok();
                    self.inline = Some(term);
                }
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
        self.fit_to_terminal();
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

    /// Takes the Ctrl-C presses since the last call; whether there was one.
    pub fn interrupted(&mut self) -> bool {
        INTERRUPTS.swap(0, Ordering::Relaxed) > 0
    }

    /// Refits the viewport to a resized terminal.
    fn fit_to_terminal(&mut self) {
        let size = terminal::size().ok();
        let Some(term) = &mut self.inline else { return };
        if size != self.size {
            self.size = size;
            let _ = term.autoresize();
        }
    }

    /// Runs `read`, which asks the terminal where the cursor is, with the REPL in
    /// the foreground and Ctrl-C a key; keeps the keys that came before the answer.
    fn reading_terminal<T>(&mut self, read: impl FnOnce() -> T) -> T {
        if !self.raw {
            return read();
        }
        ctrl_c_signals_relay(false);
        let out = read();
        self.keep_keys_read();
        ctrl_c_signals_relay(true);
        out
    }

    /// Keeps the keys that asking for the cursor position read from the terminal,
    /// for the next prompt, and counts a Ctrl-C among them. (Reading stops where
    /// the terminal has nothing more.)
    fn keep_keys_read(&mut self) {
        while event::poll(Duration::ZERO).unwrap_or(false) {
            let Ok(Event::Key(k)) = event::read() else { continue };
            if k.kind != KeyEventKind::Press {
                continue;
            }
            let control = k.modifiers.contains(KeyModifiers::CONTROL);
            match k.code {
                KeyCode::Char('c') if control => {
                    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
                }
                // Ctrl-J is the line feed a terminal not yet in raw mode made of Enter.
                KeyCode::Char('j') if control => self.typeahead.push('\n'),
                KeyCode::Char(c) if !control => self.typeahead.push(c),
                KeyCode::Enter => self.typeahead.push('\n'),
                KeyCode::Tab => self.typeahead.push('\t'),
                KeyCode::Backspace => {
                    self.typeahead.pop();
                }
                _ => {}
            }
        }
    }

    /// Gives the terminal back for the prompt, with the keys the cell's viewport
    /// read; keys it did not read are still waiting in the terminal, after these.
    pub fn end(mut self) -> String {
        self.close_viewport();
        if self.raw {
            ctrl_c_signals_relay(false);
            let _ = terminal::disable_raw_mode();
            self.raw = false;
        }
        std::mem::take(&mut self.typeahead)
    }
}

impl Drop for CellView {
    fn drop(&mut self) {
        if self.raw {
            ctrl_c_signals_relay(false);
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
