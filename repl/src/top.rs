//! `rayrepl top` and the REPL's `:top`: a live, full-screen view of the cluster.
//!
//! `rayrepl list` answers once and exits, so watching a program run means re-running it.
//! This dashboard keeps the same rows on screen (nodes, tasks, actors, placement groups,
//! objects and jobs, read by [`ray_state::fetch`]), refreshed every
//! second, with k9s and htop keys to switch tabs, filter, sort and page through them.
//!
//! A background thread polls the head and sends snapshots over a channel, so a slow or
//! unreachable head never freezes the keyboard: the UI thread only reads keys and draws.
//! All view state lives in [`App`], which is driven and drawn without a terminal in tests.

use crate::cluster_cli::{connect_head, head_address};
use anyhow::Context;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use ratatui::crossterm::{cursor, execute};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row as TableRow, Table, TableState, Tabs, Wrap};
use ratatui::{DefaultTerminal, Frame, Terminal};
use ray_state::now_utc;
use ray_state::{ActorState, JobStatus, NodeState, PlacementGroupStatus, SubmissionStatus, TaskState};
use ray_state::{Resource, Row, Rows, State, fetch, text};
use serde_json::Value;
use std::io::IsTerminal;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the head is polled.
const REFRESH: Duration = Duration::from_secs(1);
/// How long the UI waits for a key before looking for a new snapshot.
const TICK: Duration = Duration::from_millis(100);
/// A head that takes longer than this is reported, not waited for.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Columns are squeezed to fit the screen, but not below this.
const MIN_COLUMN: usize = 8;
/// Hex IDs are squeezed to this first.
const SHORT_ID: usize = 12;
/// Between columns.
const SPACING: u16 = 2;

/// `rayrepl top`.
#[derive(clap::Args)]
pub struct TopArgs {
    /// The head's address (default: this machine's latest session).
    #[arg(long)]
    pub address: Option<String>,
}

/// Opens the dashboard on the cluster at `address` (default: this machine's latest
/// session) and returns when the user leaves it, with the terminal as it was.
pub fn run(address: Option<String>) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("`rayrepl top` draws on a terminal; use `rayrepl list` to print rows");
    }
    let label = address.clone().unwrap_or_else(|| "this machine's latest cluster".to_string());
    let mut app = App::new(label);
    install_panic_hook();
    let (wants, snapshots) = spawn_fetcher(address, app.tab)?;
    let mut screen = Screen::enter()?;
    // The fetcher is not joined: it may be inside a slow request, and it stops by itself
    // once it sees these channels closed.
    drive(&mut screen.terminal, &mut app, &snapshots, &wants)
}

/// Reads keys and draws until the user leaves.
fn drive(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    snapshots: &Receiver<Snapshot>,
    wants: &Sender<Tab>,
) -> anyhow::Result<()> {
    // Drawing sorts and filters every row, so draw only when something changed.
    let mut dirty = true;
    loop {
        for snapshot in snapshots.try_iter() {
            app.apply(snapshot);
            dirty = true;
        }
        if dirty {
            terminal.draw(|frame| app.render(frame))?;
            dirty = false;
        }
        if !event::poll(TICK)? {
            continue;
        }
        // Any event redraws: for a resize, that fits the new size.
        dirty = true;
        if let Event::Key(key) = event::read()? {
            match app.handle_key(key) {
                Action::Quit => return Ok(()),
                Action::Show(tab) => {
                    // A dead fetcher cannot be helped here; the refresh time then stops moving.
                    let _ = wants.send(tab);
                }
                Action::Stay => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The terminal

/// Set while the dashboard owns the terminal.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static PANIC_HOOK: Once = Once::new();

thread_local! {
    /// This thread draws the dashboard: if it panics, the terminal must be given back.
    static DRAWS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// This thread polls the head: it shows its own panics on the dashboard's error line.
    static POLLS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Wraps the panic hook, once per process (`ratatui::init` would add a layer per `:top`).
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if POLLS.get() && ACTIVE.load(Ordering::SeqCst) {
                // Printing would scribble over the dashboard; the poller reports it instead.
                return;
            }
            if DRAWS.get() {
                // The hook runs before unwinding drops `Screen`: restore first so the message
                // lands on the main screen instead of vanishing with the alternate one.
                leave_screen();
            }
            previous(info);
        }));
    });
}

/// The terminal in raw mode on the alternate screen; dropping it (also while unwinding)
/// puts the terminal back in cooked mode on the main screen.
///
/// This is `ratatui::init`/`restore` done by hand: `init` adds a panic hook on every call
/// (the REPL may open `:top` many times), and its hook would also restore the terminal
/// when some other thread panics while the dashboard is still drawing.
struct Screen {
    terminal: DefaultTerminal,
    _restore: Restore,
}

struct Restore;

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        install_panic_hook();
        // From here on a failure drops `restore`, which undoes whatever was done.
        let restore = Restore;
        DRAWS.set(true);
        ACTIVE.store(true, Ordering::SeqCst);
        enable_raw_mode().context("cannot put the terminal in raw mode")?;
        execute!(std::io::stdout(), EnterAlternateScreen).context("cannot switch to the alternate screen")?;
        let terminal = Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))?;
        Ok(Screen { terminal, _restore: restore })
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        leave_screen();
        DRAWS.set(false);
    }
}

/// Cooked mode, main screen, visible cursor; once, however many times it is called.
fn leave_screen() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let raw = disable_raw_mode();
    let screen = execute!(std::io::stdout(), LeaveAlternateScreen, cursor::Show);
    if let Err(e) = raw.and(screen) {
        eprintln!("rayrepl top: cannot restore the terminal: {e} (try `reset`)");
    }
}

// ---------------------------------------------------------------------------
// The fetcher

/// One poll of the head, for one tab.
pub(crate) struct Snapshot {
    tab: Tab,
    /// The head polled.
    address: String,
    /// When.
    at: String,
    /// The rows, or why there are none.
    result: Result<Rows, String>,
}

/// Starts the thread that polls the head: every [`REFRESH`], and at once for a tab sent
/// on the returned sender.
fn spawn_fetcher(address: Option<String>, first: Tab) -> anyhow::Result<(Sender<Tab>, Receiver<Snapshot>)> {
    let (want_tx, want_rx) = crossbeam_channel::unbounded();
    let (snap_tx, snap_rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("rayrepl-top".to_string())
        .spawn(move || fetch_loop(address, first, &want_rx, &snap_tx))
        .context("cannot start the dashboard's polling thread")?;
    Ok((want_tx, snap_rx))
}

struct Connection {
    rt: tokio::runtime::Runtime,
    head: ray_proto::HeadClient,
    token: String,
}

fn fetch_loop(address: Option<String>, mut tab: Tab, wants: &Receiver<Tab>, snapshots: &Sender<Snapshot>) {
    POLLS.set(true);
    let mut connection = None;
    loop {
        // A bug in polling shows on the error line, and the next poll starts afresh.
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| poll(&address, &mut connection, tab)));
        let result = match polled {
            Ok(rows) => rows.map_err(|e| format!("{e:#}")),
            Err(panic) => Err(format!("polling failed: {}", panic_message(panic.as_ref()))),
        };
        if result.is_err() {
            // Reconnect next time: the cluster may have been restarted with a new token.
            connection = None;
        }
        let shown = head_address(address.clone()).unwrap_or_else(|_| "(no cluster found)".to_string());
        if snapshots.send(Snapshot { tab, address: shown, at: now_utc(), result }).is_err() {
            return;
        }
        match wants.recv_timeout(REFRESH) {
            // Only the latest of several quick tab switches matters.
            Ok(next) => tab = wants.try_iter().last().unwrap_or(next),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => s,
        (_, Some(s)) => s,
        _ => "a panic",
    }
}

fn poll(address: &Option<String>, connection: &mut Option<Connection>, tab: Tab) -> anyhow::Result<Rows> {
    if connection.is_none() {
        let (rt, head, token) = connect_head(address.clone())?;
        *connection = Some(Connection { rt, head, token });
    }
    let Some(Connection { rt, head, token }) = connection.as_mut() else {
        anyhow::bail!("no connection to the head");
    };
    // The timer must be made inside the runtime, hence the async block.
    rt.block_on(async { tokio::time::timeout(FETCH_TIMEOUT, fetch(head, token, tab.resource())).await })
        .map_err(|_| anyhow::anyhow!("the head did not answer within {} s", FETCH_TIMEOUT.as_secs()))?
        .map_err(anyhow::Error::from)
}

// ---------------------------------------------------------------------------
// The app

/// The dashboard's tabs, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tab {
    Nodes,
    Tasks,
    Actors,
    PlacementGroups,
    Objects,
    Jobs,
}

impl Tab {
    const ALL: [Tab; 6] = [Tab::Nodes, Tab::Tasks, Tab::Actors, Tab::PlacementGroups, Tab::Objects, Tab::Jobs];

    fn index(self) -> usize {
        self as usize
    }

    fn title(self) -> &'static str {
        match self {
            Tab::Nodes => "Nodes",
            Tab::Tasks => "Tasks",
            Tab::Actors => "Actors",
            Tab::PlacementGroups => "Placement groups",
            Tab::Objects => "Objects",
            Tab::Jobs => "Jobs",
        }
    }

    /// "3 tasks", "1 task".
    fn count(self, n: usize) -> String {
        let noun = self.title().to_lowercase();
        if n == 1 { format!("1 {}", noun.trim_end_matches('s')) } else { format!("{n} {noun}") }
    }

    fn resource(self) -> Resource {
        match self {
            Tab::Nodes => Resource::Nodes,
            Tab::Tasks => Resource::Tasks,
            Tab::Actors => Resource::Actors,
            Tab::PlacementGroups => Resource::PlacementGroups,
            Tab::Objects => Resource::Objects,
            Tab::Jobs => Resource::Jobs,
        }
    }

    fn step(self, by: isize) -> Tab {
        let n = Tab::ALL.len() as isize;
        Tab::ALL[(self.index() as isize + by).rem_euclid(n) as usize]
    }
}

/// What the event loop should do after a key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Stay,
    /// Switched to this tab: poll it now rather than at the next tick.
    Show(Tab),
    Quit,
}

/// One tab's rows and how they are looked at.
#[derive(Default)]
struct View {
    rows: Vec<Row>,
    cols: &'static [&'static str],
    /// A snapshot has arrived (an empty table is then "no rows", not "loading").
    loaded: bool,
    /// Position in the filtered, sorted rows.
    selected: usize,
    filter: String,
    /// Index into `cols`; `None` keeps the head's order.
    sort: Option<usize>,
    descending: bool,
    /// First row on screen; kept between draws so the list scrolls like a list.
    offset: std::cell::Cell<usize>,
}

/// The dashboard's state: everything drawn comes from here.
pub(crate) struct App {
    tab: Tab,
    views: [View; Tab::ALL.len()],
    address: String,
    /// When the last good snapshot arrived.
    refreshed: Option<String>,
    /// Why the last poll failed; older rows stay on screen under it.
    error: Option<String>,
    /// The filter being typed after `/`, applied live to the current tab.
    editing: Option<String>,
    help: bool,
    /// Table rows that fit on screen at the last draw, for PgUp/PgDn.
    page: std::cell::Cell<usize>,
}

impl App {
    pub(crate) fn new(address: String) -> App {
        App {
            tab: Tab::Nodes,
            views: Default::default(),
            address,
            refreshed: None,
            error: None,
            editing: None,
            help: false,
            page: std::cell::Cell::new(10),
        }
    }

    fn view(&self) -> &View {
        &self.views[self.tab.index()]
    }

    fn view_mut(&mut self) -> &mut View {
        &mut self.views[self.tab.index()]
    }

    pub(crate) fn apply(&mut self, snapshot: Snapshot) {
        self.address = snapshot.address;
        match snapshot.result {
            Ok((rows, cols)) => {
                self.error = None;
                self.refreshed = Some(snapshot.at);
                self.keeping_selection(snapshot.tab, |v| {
                    v.rows = rows;
                    v.cols = cols;
                    v.loaded = true;
                });
            }
            Err(e) => self.error = Some(format!("{}: {e}", snapshot.at)),
        }
    }

    /// The filter in force on `tab`: the one being typed, else the applied one.
    fn filter_of(&self, tab: Tab) -> &str {
        match &self.editing {
            Some(typing) if tab == self.tab => typing,
            _ => &self.views[tab.index()].filter,
        }
    }

    /// Indices into the tab's rows, filtered and sorted as shown.
    fn visible(&self, tab: Tab) -> Vec<usize> {
        let v = &self.views[tab.index()];
        let needle = self.filter_of(tab).trim().to_lowercase();
        let mut shown: Vec<usize> = (0..v.rows.len())
            .filter(|&i| {
                needle.is_empty() || v.cols.iter().any(|c| cell_text(&v.rows[i], c).to_lowercase().contains(&needle))
            })
            .collect();
        if let Some(col) = v.sort.and_then(|s| v.cols.get(s)) {
            sort_rows(&mut shown, &v.rows, col);
        }
        if v.descending {
            shown.reverse();
        }
        shown
    }

    /// Runs `change` on a tab and then reselects the row that was selected (by its first
    /// column, its ID), so refreshes and re-sorts do not move the selection to another row.
    fn keeping_selection(&mut self, tab: Tab, change: impl FnOnce(&mut View)) {
        let id = |v: &View, row: usize| v.cols.first().map(|c| cell_text(&v.rows[row], c));
        let v = &self.views[tab.index()];
        let before = self.visible(tab).get(v.selected).and_then(|&i| id(v, i));
        change(&mut self.views[tab.index()]);
        let shown = self.visible(tab);
        let v = &self.views[tab.index()];
        let found = before.and_then(|k| shown.iter().position(|&i| id(v, i).as_ref() == Some(&k)));
        let selected = found.unwrap_or(v.selected).min(shown.len().saturating_sub(1));
        self.views[tab.index()].selected = selected;
    }

    fn select(&mut self, to: isize) {
        let last = self.visible(self.tab).len().saturating_sub(1);
        self.view_mut().selected = to.clamp(0, last as isize) as usize;
    }

    fn move_by(&mut self, by: isize) {
        self.select(self.view().selected as isize + by);
    }

    fn switch(&mut self, tab: Tab) -> Action {
        if tab == self.tab {
            return Action::Stay;
        }
        self.tab = tab;
        Action::Show(tab)
    }

    fn cycle_sort(&mut self, forward: bool) {
        let n = self.view().cols.len();
        if n == 0 {
            return;
        }
        // htop-style: step through the columns, with "the head's order" between last and first.
        let next = match (self.view().sort, forward) {
            (None, true) => Some(0),
            (None, false) => Some(n - 1),
            (Some(i), true) => (i + 1 < n).then_some(i + 1),
            (Some(i), false) => i.checked_sub(1),
        };
        self.keeping_selection(self.tab, |v| v.sort = next);
    }

    /// Updates the state for one key and says what the event loop should do.
    pub(crate) fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.kind != KeyEventKind::Press {
            return Action::Stay;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.help {
            // Like htop: any key closes help, so `q` and Esc go back rather than out.
            self.help = false;
            return Action::Stay;
        }
        if let Some(typing) = &mut self.editing {
            match key.code {
                KeyCode::Enter => {
                    let filter = typing.trim().to_string();
                    self.editing = None;
                    self.view_mut().filter = filter;
                }
                KeyCode::Esc => self.editing = None,
                KeyCode::Backspace => {
                    typing.pop();
                }
                KeyCode::Char('u') if ctrl => typing.clear(),
                KeyCode::Char(c) if !ctrl => typing.push(c),
                _ => return Action::Stay,
            }
            // The rows under the selection changed; start from the top, like k9s.
            self.select(0);
            return Action::Stay;
        }
        let page = self.page.get().max(1) as isize;
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if self.view().filter.is_empty() => return Action::Quit,
            KeyCode::Esc => {
                self.view_mut().filter.clear();
                self.select(0);
            }
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('/') => self.editing = Some(self.view().filter.clone()),
            KeyCode::Tab | KeyCode::Right | KeyCode::Char('l') => return self.switch(self.tab.step(1)),
            KeyCode::BackTab | KeyCode::Left | KeyCode::Char('h') => return self.switch(self.tab.step(-1)),
            KeyCode::Char(c @ '1'..='6') => return self.switch(Tab::ALL[c as usize - '1' as usize]),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-page),
            KeyCode::PageDown => self.move_by(page),
            KeyCode::Home | KeyCode::Char('g') => self.select(0),
            KeyCode::End | KeyCode::Char('G') => self.select(isize::MAX),
            KeyCode::Char('s' | '>') => self.cycle_sort(true),
            KeyCode::Char('<') => self.cycle_sort(false),
            KeyCode::Char('r') => {
                let tab = self.tab;
                self.keeping_selection(tab, |v| v.descending = !v.descending);
            }
            _ => {}
        }
        Action::Stay
    }

    /// Draws the whole dashboard.
    pub(crate) fn render(&self, frame: &mut Frame<'_>) {
        // An error gets a second line when it is long (they name the address and the fix).
        let error_height = match &self.error {
            None => 0,
            Some(e) if e.chars().count() + 1 > usize::from(frame.area().width) => 2,
            Some(_) => 1,
        };
        let [header, tabs, error, body, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(error_height),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        self.render_header(frame, header);
        self.render_tabs(frame, tabs);
        if let Some(e) = &self.error {
            let line = Line::from(vec![Span::raw(" "), Span::raw(e.as_str()).fg(Color::Red)]);
            frame.render_widget(Paragraph::new(line).wrap(Wrap { trim: true }), error);
        }
        let shown = self.visible(self.tab);
        self.render_table(frame, body, &shown);
        self.render_footer(frame, footer, shown.len());
        if self.help {
            render_help(frame);
        }
    }

    fn render_header(&self, frame: &mut Frame<'_>, area: Rect) {
        let refreshed = match &self.refreshed {
            Some(at) => format!("refreshed {at}"),
            None => "connecting…".to_string(),
        };
        let line = Line::from(vec![
            Span::raw(" rayrepl top ").bold().fg(Color::Black).bg(Color::Cyan),
            Span::raw("  cluster "),
            Span::raw(self.address.as_str()).bold(),
            Span::raw("  ·  "),
            Span::raw(refreshed).dim(),
        ]);
        frame.render_widget(Paragraph::new(line), area);
    }

    fn render_tabs(&self, frame: &mut Frame<'_>, area: Rect) {
        // No counts here: only the shown tab is polled, so the others' would be stale.
        let titles = Tab::ALL.iter().map(|&t| Line::from(format!("{} {}", t.index() + 1, t.title())));
        let tabs = Tabs::new(titles)
            .select(self.tab.index())
            .highlight_style(Style::new().fg(Color::Black).bg(Color::Yellow).add_modifier(Modifier::BOLD))
            .divider("│");
        frame.render_widget(tabs, area);
    }

    fn render_table(&self, frame: &mut Frame<'_>, area: Rect, shown: &[usize]) {
        let v = self.view();
        let filter = self.filter_of(self.tab).trim();
        let mut block = Block::bordered().title(Line::from(format!(" {} ", self.tab.title())).bold());
        if !filter.is_empty() {
            block = block.title(Line::from(format!(" /{filter} ")).fg(Color::Cyan));
        }
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let noun = self.tab.title().to_lowercase();
        if !v.loaded {
            let what = if self.error.is_some() { "no data yet" } else { "loading…" };
            frame.render_widget(Paragraph::new(format!(" {what}")).dim(), inner);
            return;
        }

        let widths = fit_widths(v, shown, inner.width);
        let header = TableRow::new(v.cols.iter().zip(&widths).enumerate().map(|(i, (c, &w))| {
            let mark = match v.sort {
                Some(s) if s == i => {
                    if v.descending {
                        "▼"
                    } else {
                        "▲"
                    }
                }
                _ => "",
            };
            // A squeezed header still shows the sort mark.
            Cell::from(format!("{}{mark}", clip(c, w.saturating_sub(mark.chars().count()))))
        }))
        .style(Style::new().add_modifier(Modifier::BOLD).fg(Color::Cyan));
        let resource = self.tab.resource();
        let state_column = State::column(resource);
        let rows = shown.iter().map(|&i| {
            let r = &v.rows[i];
            TableRow::new(v.cols.iter().zip(&widths).map(|(c, &w)| {
                let value = cell_text(r, c);
                let state = if state_column == Some(*c) { State::parse(resource, &value) } else { None };
                let style = state.map_or(Style::new(), state_style);
                let shown = if c.ends_with("_ID") { clip_id(&value, w) } else { clip(&value, w) };
                Cell::from(shown).style(style)
            }))
        });
        let table = Table::new(rows, widths.iter().map(|&w| Constraint::Length(w as u16)))
            .header(header)
            .column_spacing(SPACING)
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        let selected = shown.len().checked_sub(1).map(|last| v.selected.min(last));
        let mut state = TableState::new().with_offset(v.offset.get()).with_selected(selected);
        frame.render_stateful_widget(table, inner, &mut state);
        v.offset.set(state.offset());
        // Rows under the header row.
        self.page.set(usize::from(inner.height.saturating_sub(1)));

        if shown.is_empty() {
            let message = if filter.is_empty() { format!(" no {noun}") } else { format!(" no {noun} match /{filter}") };
            let below_header = Rect { y: inner.y.saturating_add(1), height: inner.height.saturating_sub(1), ..inner };
            frame.render_widget(Paragraph::new(message).dim(), below_header);
        }
    }

    fn render_footer(&self, frame: &mut Frame<'_>, area: Rect, shown: usize) {
        let total = self.view().rows.len();
        let count = if !self.view().loaded {
            String::new()
        } else if shown == total {
            self.tab.count(total)
        } else {
            format!("{shown} of {}", self.tab.count(total))
        };
        let right = format!("{count} ");
        let [left_area, right_area] =
            Layout::horizontal([Constraint::Min(0), Constraint::Length(right.chars().count() as u16)]).areas(area);
        let left = match &self.editing {
            Some(typing) => Line::from(vec![
                Span::raw(" /").fg(Color::Cyan).bold(),
                Span::raw(typing.as_str()),
                Span::raw("█").fg(Color::Cyan),
                Span::raw("   Enter apply  Esc cancel").dim(),
            ]),
            None => {
                let hints = [
                    ("?", "help"),
                    ("/", "filter"),
                    ("s <>", "sort"),
                    ("r", "reverse"),
                    ("Tab 1-6", "view"),
                    ("q", "quit"),
                ];
                // As many hints as fit beside the count, most useful first.
                let mut spans = vec![Span::raw(" ")];
                let mut used = 1;
                for (k, what) in hints {
                    let (key, text) = (format!("<{k}>"), format!(" {what}  "));
                    used += key.chars().count() + text.chars().count();
                    if used > usize::from(left_area.width) {
                        break;
                    }
                    spans.push(Span::raw(key).fg(Color::Cyan));
                    spans.push(Span::raw(text));
                }
                Line::from(spans)
            }
        };
        frame.render_widget(Paragraph::new(left), left_area);
        frame.render_widget(Paragraph::new(right).bold(), right_area);
    }
}

const HELP: &[(&str, &str)] = &[
    ("Tab → l", "next view"),
    ("Shift-Tab ← h", "previous view"),
    ("1 … 6", "Nodes, Tasks, Actors, Placement groups, Objects, Jobs"),
    ("↑ k  ↓ j", "move the selection"),
    ("PgUp PgDn", "a page up or down"),
    ("Home g  End G", "first or last row"),
    ("/", "filter rows (Enter applies, Esc cancels)"),
    ("s >  <", "sort by the next or previous column"),
    ("r", "reverse the order"),
    ("Esc", "clear the filter, then leave"),
    ("q  Ctrl-C", "leave"),
    ("?", "this help; any key closes it"),
];

fn render_help(frame: &mut Frame<'_>) {
    let key_width = HELP.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut lines: Vec<Line<'_>> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![Span::raw(format!(" {k:<key_width$}  ")).fg(Color::Cyan).bold(), Span::raw(*what)])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(" Rows refresh every second from the head.").dim());
    let width = lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 3;
    let height = lines.len() as u16 + 2;
    let area = frame.area();
    let popup = Rect {
        x: area.x + area.width.saturating_sub(width) / 2,
        y: area.y + area.height.saturating_sub(height) / 2,
        width: width.min(area.width),
        height: height.min(area.height),
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Help ").border_style(Style::new().fg(Color::Cyan))),
        popup,
    );
}

fn cell_text(row: &Row, col: &str) -> String {
    row.get(col).map(text).unwrap_or_default()
}

/// Colours a task's, actor's, node's, placement group's or job's state: green done or
/// up, yellow busy, red failed or gone, dim waiting.
fn state_style(state: State) -> Style {
    let waiting = Style::new().add_modifier(Modifier::DIM);
    let busy = Style::new().fg(Color::Yellow);
    let good = Style::new().fg(Color::Green);
    let bad = Style::new().fg(Color::Red);
    match state {
        State::Task(TaskState::Nil) | State::Actor(ActorState::Nil) => Style::new(),
        State::Node(NodeState::Nil) | State::Job(JobStatus::Nil) => Style::new(),
        State::Task(TaskState::PendingArgsAvail | TaskState::PendingNodeAssignment) => waiting,
        State::Actor(ActorState::PendingCreation) => waiting,
        State::PlacementGroup(PlacementGroupStatus::Nil | PlacementGroupStatus::Pending) => waiting,
        State::PlacementGroup(PlacementGroupStatus::Rescheduling) => busy,
        State::PlacementGroup(PlacementGroupStatus::Created) => good,
        State::PlacementGroup(PlacementGroupStatus::Removed) => bad,
        State::Task(TaskState::Running) | State::Actor(ActorState::Restarting) | State::Job(JobStatus::Running) => busy,
        State::Task(TaskState::Finished) | State::Actor(ActorState::Alive) | State::Node(NodeState::Alive) => good,
        State::Job(JobStatus::Succeeded) | State::Submission(SubmissionStatus::Succeeded) => good,
        State::Submission(SubmissionStatus::Pending | SubmissionStatus::Stopped) => waiting,
        State::Submission(SubmissionStatus::Running) => busy,
        State::Submission(SubmissionStatus::Failed) => bad,
        State::Task(TaskState::Failed) | State::Actor(ActorState::Dead) | State::Node(NodeState::Dead) => bad,
    }
}

/// A sortable number: a JSON number, or a string like "12", "1.50 KiB" (as
/// `format_bytes` writes sizes).
fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let (digits, unit) = s.split_once(' ').unwrap_or((s, ""));
            let scale = match unit {
                "" | "B" => 1.0,
                "KiB" => 1024.0,
                "MiB" => 1024.0 * 1024.0,
                "GiB" => 1024.0 * 1024.0 * 1024.0,
                "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
                _ => return None,
            };
            digits.parse::<f64>().ok().filter(|n| n.is_finite()).map(|n| n * scale)
        }
        _ => None,
    }
}

/// Sorts row indices by a column: numerically when every value is a number, else as
/// case-insensitive text. Deciding per column keeps the order total (mixing the two per
/// pair would not be).
fn sort_rows(shown: &mut [usize], rows: &[Row], col: &str) {
    let numbers: Option<Vec<f64>> = shown.iter().map(|&i| number(rows[i].get(col))).collect();
    match numbers {
        Some(keys) => {
            let mut keyed: Vec<(f64, usize)> = keys.into_iter().zip(shown.iter().copied()).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (slot, (_, i)) in shown.iter_mut().zip(keyed) {
                *slot = i;
            }
        }
        None => shown.sort_by_cached_key(|&i| cell_text(&rows[i], col).to_lowercase()),
    }
}

/// Column widths fitted to the header and the shown cells, then squeezed until the table
/// fits `width`: first the hex IDs (a prefix tells them apart, and `/` still searches the
/// whole ID), then headers wider than their values, then the widest columns.
fn fit_widths(v: &View, shown: &[usize], width: u16) -> Vec<usize> {
    let content: Vec<usize> = v
        .cols
        .iter()
        .map(|c| shown.iter().map(|&i| cell_text(&v.rows[i], c).chars().count()).max().unwrap_or(0))
        .collect();
    // One more than the header for the sort mark.
    let mut widths: Vec<usize> = v.cols.iter().zip(&content).map(|(c, &n)| n.max(c.chars().count() + 1)).collect();
    let gaps = usize::from(SPACING) * widths.len().saturating_sub(1);
    let room = usize::from(width).saturating_sub(gaps);
    let ids: Vec<usize> =
        v.cols.iter().zip(&widths).map(|(c, &w)| if c.ends_with("_ID") { w.min(SHORT_ID) } else { w }).collect();
    squeeze(&mut widths, room, &ids);
    let headers: Vec<usize> = content.iter().map(|&n| n.max(MIN_COLUMN)).collect();
    squeeze(&mut widths, room, &headers);
    let least = vec![MIN_COLUMN; widths.len()];
    squeeze(&mut widths, room, &least);
    // Still too wide: like htop, the columns past the right edge are not shown (callers zip
    // the columns with these widths).
    let mut used = 0;
    let fits = widths
        .iter()
        .take_while(|&&w| {
            used += w + if used == 0 { 0 } else { usize::from(SPACING) };
            used <= usize::from(width)
        })
        .count();
    widths.truncate(fits.max(1));
    widths
}

/// Narrows the widest column that is above its floor, one character at a time, until the
/// widths fit `room` or every column is at its floor.
fn squeeze(widths: &mut [usize], room: usize, floors: &[usize]) {
    while widths.iter().sum::<usize>() > room {
        let widest =
            widths.iter().zip(floors).enumerate().filter(|(_, (w, floor))| w > floor).max_by_key(|(_, (w, _))| **w);
        let Some((i, _)) = widest else { return };
        widths[i] -= 1;
    }
}

/// A hex ID cut to `width`: leading zeros go first, since this cluster's task and actor
/// IDs start with a zero-padded counter and would otherwise all look alike.
fn clip_id(id: &str, width: usize) -> String {
    let significant = id.trim_start_matches('0');
    if id.chars().count() <= width || significant.len() == id.len() {
        return clip(id, width);
    }
    clip(&format!("…{significant}"), width)
}

/// `s` cut to `width` characters, ending in "…" when cut.
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use serde_json::json;

    const COLS: &[&str] = &["TASK_ID", "NAME", "STATE", "WORKER_PID"];

    fn task(id: &str, name: &str, state: &str, pid: u64) -> Row {
        [("TASK_ID", json!(id)), ("NAME", json!(name)), ("STATE", json!(state)), ("WORKER_PID", json!(pid))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    fn sample_tasks() -> Vec<Row> {
        vec![
            task("t1", "gamma", "RUNNING", 100),
            task("t2", "Alpha_square", "FINISHED", 20),
            task("t3", "beta", "FAILED", 3),
        ]
    }

    fn snapshot(tab: Tab, rows: Vec<Row>) -> Snapshot {
        Snapshot {
            tab,
            address: "127.0.0.1:6379".to_string(),
            at: "2025-01-01 12:00:00 UTC".to_string(),
            result: Ok((rows, COLS)),
        }
    }

    /// An app on the Tasks tab with the sample rows.
    fn tasks_app() -> App {
        let mut app = App::new("127.0.0.1:6379".to_string());
        app.apply(snapshot(Tab::Tasks, sample_tasks()));
        assert_eq!(press(&mut app, KeyCode::Char('2')), Action::Show(Tab::Tasks));
        app
    }

    fn press(app: &mut App, code: KeyCode) -> Action {
        app.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            press(app, KeyCode::Char(c));
        }
    }

    fn draw(app: &App) -> Terminal<TestBackend> {
        draw_sized(app, 100, 20)
    }

    fn draw_sized(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
        terminal.draw(|f| app.render(f)).expect("draw");
        terminal
    }

    fn screen(app: &App) -> Vec<String> {
        lines_of(&draw(app))
    }

    fn lines_of(terminal: &Terminal<TestBackend>) -> Vec<String> {
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| (0..buffer.area.width).filter_map(|x| buffer.cell((x, y)).map(|c| c.symbol())).collect())
            .collect()
    }

    /// Lines of the screen holding the sample tasks' names, top to bottom.
    fn name_order(app: &App) -> Vec<&'static str> {
        let lines = screen(app);
        let mut found: Vec<(usize, &'static str)> = ["gamma", "Alpha_square", "beta"]
            .into_iter()
            .filter_map(|n| lines.iter().position(|l| l.contains(n)).map(|y| (y, n)))
            .collect();
        found.sort();
        found.into_iter().map(|(_, n)| n).collect()
    }

    fn contains(app: &App, text: &str) -> bool {
        screen(app).iter().any(|l| l.contains(text))
    }

    #[test]
    fn tabs_header_and_rows_are_drawn() {
        let app = tasks_app();
        let lines = screen(&app);
        let all = lines.join("\n");
        for title in ["1 Nodes", "2 Tasks", "3 Actors", "4 Placement groups", "5 Objects", "6 Jobs"] {
            assert!(lines[1].contains(title), "tab {title} missing from {:?}", lines[1]);
        }
        assert!(lines[0].contains("127.0.0.1:6379") && lines[0].contains("refreshed 2025-01-01 12:00:00 UTC"));
        let header = lines.iter().find(|l| l.contains("TASK_ID")).expect("a header row");
        assert!(header.contains("NAME") && header.contains("STATE") && header.contains("WORKER_PID"), "{header}");
        assert_eq!(name_order(&app), ["gamma", "Alpha_square", "beta"], "{all}");
        assert!(lines.last().is_some_and(|l| l.contains("3 tasks") && l.contains("<?> help")), "{all}");
    }

    #[test]
    fn other_tabs_load_and_switch_with_keys() {
        let mut app = tasks_app();
        assert!(!contains(&app, "loading…"));
        assert_eq!(press(&mut app, KeyCode::Tab), Action::Show(Tab::Actors));
        assert!(contains(&app, "loading…"), "a tab with no snapshot yet says so");
        assert_eq!(press(&mut app, KeyCode::BackTab), Action::Show(Tab::Tasks));
        assert_eq!(press(&mut app, KeyCode::Left), Action::Show(Tab::Nodes));
        assert_eq!(press(&mut app, KeyCode::Left), Action::Show(Tab::Jobs), "wraps around");
        assert_eq!(press(&mut app, KeyCode::Char('6')), Action::Stay, "already there");
        assert_eq!(press(&mut app, KeyCode::Right), Action::Show(Tab::Nodes));
        app.apply(snapshot(Tab::Nodes, vec![]));
        assert!(contains(&app, "no nodes") && contains(&app, "0 nodes"));
    }

    #[test]
    fn placement_groups_have_a_tab_with_their_bundles() {
        const PG_COLS: &[&str] = &["PLACEMENT_GROUP_ID", "NAME", "CREATOR_JOB_ID", "STATE", "STRATEGY", "BUNDLES"];
        let group = |id: &str, name: &str, state: &str, strategy: &str, bundles: &str| -> Row {
            [
                ("PLACEMENT_GROUP_ID", json!(id)),
                ("NAME", json!(name)),
                ("CREATOR_JOB_ID", json!("00000001")),
                ("STATE", json!(state)),
                ("STRATEGY", json!(strategy)),
                ("BUNDLES", json!(bundles)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        };
        let mut app = tasks_app();
        assert_eq!(press(&mut app, KeyCode::Char('4')), Action::Show(Tab::PlacementGroups));
        assert_eq!(Tab::PlacementGroups.resource(), Resource::PlacementGroups);
        app.apply(Snapshot {
            tab: Tab::PlacementGroups,
            address: "127.0.0.1:6379".to_string(),
            at: "2025-01-01 12:00:00 UTC".to_string(),
            result: Ok((
                vec![
                    group("aa01", "trainers", "CREATED", "PACK", "{CPU: 1}@3f2a1b9c, {CPU: 1}@3f2a1b9c"),
                    group("aa02", "spread", "PENDING", "STRICT_SPREAD", "{CPU: 1}@-, {CPU: 1}@-"),
                ],
                PG_COLS,
            )),
        });
        let lines = screen(&app);
        let all = lines.join("\n");
        assert!(lines.iter().any(|l| l.contains("STRATEGY") && l.contains("BUNDLES")), "{all}");
        assert!(all.contains("{CPU: 1}@3f2a1b9c") && all.contains("STRICT_SPREAD"), "{all}");
        assert!(lines.last().is_some_and(|l| l.contains("2 placement groups")), "{all}");
        assert_eq!(state_style(State::PlacementGroup(PlacementGroupStatus::Created)).fg, Some(Color::Green));
        assert_eq!(
            state_style(State::PlacementGroup(PlacementGroupStatus::Pending)),
            Style::new().add_modifier(Modifier::DIM)
        );
        press(&mut app, KeyCode::Char('/'));
        typed(&mut app, "strict");
        press(&mut app, KeyCode::Enter);
        assert!(contains(&app, "1 of 2 placement groups") && !contains(&app, "trainers"), "{:#?}", screen(&app));
        assert_eq!(press(&mut app, KeyCode::Right), Action::Show(Tab::Objects));
    }

    #[test]
    fn filter_narrows_rows_case_insensitively_and_esc_clears_it() {
        let mut app = tasks_app();
        assert_eq!(press(&mut app, KeyCode::Char('/')), Action::Stay);
        typed(&mut app, "SQUARE");
        // Live while typing, with the prompt in the footer.
        assert!(contains(&app, "/SQUARE█"));
        assert_eq!(name_order(&app), ["Alpha_square"]);
        press(&mut app, KeyCode::Enter);
        assert_eq!(name_order(&app), ["Alpha_square"]);
        assert!(contains(&app, "1 of 3 tasks"), "{:#?}", screen(&app));
        // Filters match any shown column, e.g. the state.
        press(&mut app, KeyCode::Char('/'));
        for _ in 0.."SQUARE".len() {
            press(&mut app, KeyCode::Backspace);
        }
        typed(&mut app, "fail");
        press(&mut app, KeyCode::Enter);
        assert_eq!(name_order(&app), ["beta"]);
        // The first Esc clears the filter instead of leaving.
        assert_eq!(press(&mut app, KeyCode::Esc), Action::Stay);
        assert_eq!(name_order(&app), ["gamma", "Alpha_square", "beta"]);
        assert!(contains(&app, "3 tasks") && !contains(&app, " of 3 tasks"));
        assert_eq!(press(&mut app, KeyCode::Esc), Action::Quit);
    }

    #[test]
    fn esc_while_typing_cancels_the_new_filter() {
        let mut app = tasks_app();
        press(&mut app, KeyCode::Char('/'));
        typed(&mut app, "beta");
        press(&mut app, KeyCode::Enter);
        press(&mut app, KeyCode::Char('/'));
        typed(&mut app, "zzz");
        assert!(contains(&app, "no tasks match /betazzz"));
        assert_eq!(press(&mut app, KeyCode::Esc), Action::Stay);
        assert_eq!(name_order(&app), ["beta"], "the applied filter is back");
        // Typed letters went to the filter, not to the keys they also are.
        press(&mut app, KeyCode::Char('/'));
        assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Stay);
    }

    #[test]
    fn sort_cycles_columns_and_r_reverses() {
        let mut app = tasks_app();
        press(&mut app, KeyCode::Char('s')); // TASK_ID
        assert!(contains(&app, "TASK_ID▲"));
        press(&mut app, KeyCode::Char('>')); // NAME
        assert!(contains(&app, "NAME▲") && !contains(&app, "TASK_ID▲"));
        assert_eq!(name_order(&app), ["Alpha_square", "beta", "gamma"], "case-insensitive text order");
        press(&mut app, KeyCode::Char('r'));
        assert!(contains(&app, "NAME▼"));
        assert_eq!(name_order(&app), ["gamma", "beta", "Alpha_square"]);
        press(&mut app, KeyCode::Char('r'));
        // WORKER_PID sorts as numbers (3 < 20 < 100), not as text.
        press(&mut app, KeyCode::Char('s'));
        press(&mut app, KeyCode::Char('s'));
        assert!(contains(&app, "WORKER_PID▲"));
        assert_eq!(name_order(&app), ["beta", "Alpha_square", "gamma"]);
        // Past the last column comes the head's own order, then `<` walks back.
        press(&mut app, KeyCode::Char('s'));
        assert!(!contains(&app, "▲"));
        assert_eq!(name_order(&app), ["gamma", "Alpha_square", "beta"]);
        press(&mut app, KeyCode::Char('<'));
        assert!(contains(&app, "WORKER_PID▲"));
    }

    #[test]
    fn selection_moves_and_follows_its_row_across_refreshes() {
        let mut app = tasks_app();
        let selected = |app: &App| {
            let terminal = draw(app);
            let buffer = terminal.backend().buffer();
            // The highlighted row is drawn reversed from the table's left edge.
            (0..buffer.area.height)
                .find(|&y| buffer.cell((1, y)).is_some_and(|c| c.modifier.contains(Modifier::REVERSED)))
                .map(|y| (0..buffer.area.width).filter_map(|x| buffer.cell((x, y)).map(|c| c.symbol())).collect())
                .unwrap_or_else(String::new)
        };
        assert!(selected(&app).contains("gamma"));
        press(&mut app, KeyCode::Down);
        assert!(selected(&app).contains("Alpha_square"));
        press(&mut app, KeyCode::End);
        assert!(selected(&app).contains("beta"));
        press(&mut app, KeyCode::Char('k'));
        assert!(selected(&app).contains("Alpha_square"));
        // The head reorders its rows: the selection stays on t2.
        let mut rows = sample_tasks();
        rows.reverse();
        app.apply(snapshot(Tab::Tasks, rows));
        assert!(selected(&app).contains("Alpha_square"));
        press(&mut app, KeyCode::Home);
        assert!(selected(&app).contains("beta"));
        press(&mut app, KeyCode::Up);
        assert!(selected(&app).contains("beta"), "stops at the top");
    }

    #[test]
    fn help_overlay_opens_with_question_mark_and_any_key_closes_it() {
        let mut app = tasks_app();
        assert!(!contains(&app, "Help"));
        press(&mut app, KeyCode::Char('?'));
        assert!(contains(&app, "Help"));
        assert!(contains(&app, "filter rows (Enter applies, Esc cancels)"));
        assert!(contains(&app, "reverse the order"));
        // q and Esc go back out of help, not out of the dashboard.
        assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Stay);
        assert!(!contains(&app, "Help"));
        press(&mut app, KeyCode::Char('?'));
        assert_eq!(press(&mut app, KeyCode::Esc), Action::Stay);
        assert!(!contains(&app, "reverse the order"));
    }

    #[test]
    fn q_esc_and_ctrl_c_leave() {
        assert_eq!(press(&mut tasks_app(), KeyCode::Char('q')), Action::Quit);
        assert_eq!(press(&mut tasks_app(), KeyCode::Esc), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(tasks_app().handle_key(ctrl_c), Action::Quit);
        let mut typing = tasks_app();
        press(&mut typing, KeyCode::Char('/'));
        assert_eq!(typing.handle_key(ctrl_c), Action::Quit, "Ctrl-C leaves even mid-filter");
        let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(tasks_app().handle_key(release), Action::Stay, "only presses count");
    }

    #[test]
    fn an_unreachable_head_shows_an_error_and_keeps_the_rows() {
        let mut app = tasks_app();
        app.apply(Snapshot {
            tab: Tab::Tasks,
            address: "127.0.0.1:6379".to_string(),
            at: "2025-01-01 12:00:05 UTC".to_string(),
            result: Err("cannot reach the head at 127.0.0.1:6379".to_string()),
        });
        assert!(contains(&app, "12:00:05 UTC: cannot reach the head at 127.0.0.1:6379"));
        // A long error wraps onto a second line rather than being cut.
        app.apply(Snapshot {
            tab: Tab::Tasks,
            address: "127.0.0.1:6379".to_string(),
            at: "12:00:06".to_string(),
            result: Err(format!("{} the end", "word ".repeat(30))),
        });
        assert!(contains(&app, "the end"), "{:#?}", screen(&app));
        assert_eq!(name_order(&app), ["gamma", "Alpha_square", "beta"]);
        app.apply(snapshot(Tab::Tasks, sample_tasks()));
        assert!(!contains(&app, "cannot reach"), "a good poll clears the error");
    }

    #[test]
    fn task_states_are_coloured() {
        let app = tasks_app();
        let terminal = draw(&app);
        let buffer = terminal.backend().buffer();
        let colour_of = |word: &str| {
            for y in 0..buffer.area.height {
                let line: String =
                    (0..buffer.area.width).filter_map(|x| buffer.cell((x, y)).map(|c| c.symbol())).collect();
                if let Some(x) = line.find(word) {
                    // `find` is a byte offset; the rows before it are ASCII.
                    return buffer.cell((x as u16, y)).map(|c| c.fg);
                }
            }
            None
        };
        assert_eq!(colour_of("FINISHED"), Some(Color::Green));
        assert_eq!(colour_of("FAILED"), Some(Color::Red));
        assert_eq!(colour_of("RUNNING"), Some(Color::Yellow));
        let pending = State::Task(TaskState::PendingNodeAssignment);
        assert_eq!(state_style(pending), Style::new().add_modifier(Modifier::DIM));
        assert_eq!(state_style(State::Job(JobStatus::Succeeded)).fg, Some(Color::Green));
    }

    #[test]
    fn wide_tables_are_squeezed_and_tiny_terminals_do_not_panic() {
        let mut app = tasks_app();
        app.apply(snapshot(Tab::Tasks, vec![task(&"ab".repeat(24), "gamma", "RUNNING", 1)]));
        // 60 columns: the 48-character ID gives way so the short columns stay whole.
        let lines = lines_of(&draw_sized(&app, 60, 12));
        let row = lines.iter().find(|l| l.contains("abab")).expect("the row");
        assert!(row.contains('…') && row.contains("gamma") && row.contains("RUNNING"), "{lines:#?}");
        assert!(!row.contains(&"ab".repeat(24)), "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("WORKER_PID")), "{lines:#?}");
        // 30 columns: rather than squeeze every column to nothing, the last ones go.
        let lines = lines_of(&draw_sized(&app, 30, 12));
        let header = lines.iter().find(|l| l.contains("NAME")).expect("a header");
        assert!(header.contains("STATE") && !header.contains("WORKER"), "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("RUNNING")), "{lines:#?}");
        assert!(lines.last().is_some_and(|l| l.contains("1 task") && l.contains("<?> help")), "{lines:#?}");
        press(&mut app, KeyCode::Char('?'));
        for (w, h) in [(10, 3), (1, 1), (30, 8), (0, 0)] {
            draw_sized(&app, w, h);
        }
    }

    #[test]
    fn squeezed_ids_keep_their_distinguishing_digits() {
        assert_eq!(clip_id("000000000000000224828fd900000001", 12), "…224828fd90…");
        assert_eq!(clip_id("377dbf85e349df578d22b9866c52b4c7", 12), "377dbf85e34…");
        assert_eq!(clip_id("00000001", 12), "00000001");
        assert_eq!(clip_id("00000001", 5), "…1");
    }

    #[test]
    fn sizes_sort_as_numbers() {
        assert_eq!(number(Some(&json!("512 B"))), Some(512.0));
        assert_eq!(number(Some(&json!("1.50 KiB"))), Some(1536.0));
        assert_eq!(number(Some(&json!("RUNNING"))), None);
        let rows: Vec<Row> = ["2.00 MiB", "900 B", "1.00 KiB"]
            .iter()
            .map(|s| [("SIZE".to_string(), json!(s))].into_iter().collect())
            .collect();
        let mut order = vec![0, 1, 2];
        sort_rows(&mut order, &rows, "SIZE");
        assert_eq!(order, [1, 2, 0]);
    }
}
