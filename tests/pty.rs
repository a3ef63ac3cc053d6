//! Drives the real `rayrepl` binary through a pseudo-terminal, as a person would:
//! it types keys and reads the screen, which a vt100 parser keeps up to date.

#![allow(dead_code)]

use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A program running in a pseudo-terminal.
pub struct Terminal {
    parser: Arc<Mutex<vt100::Parser>>,
    /// Everything the program wrote, for transcripts in failure messages.
    raw: Arc<Mutex<Vec<u8>>>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    _master: Box<dyn MasterPty + Send>,
}

pub const ROWS: u16 = 40;
pub const COLS: u16 = 140;

impl Terminal {
    /// Starts `program args` in a fresh terminal of ROWS x COLS, with `env` added.
    pub fn spawn(program: &Path, args: &[&str], env: &[(&str, String)]) -> Terminal {
        let pty = native_pty_system()
            .openpty(PtySize { rows: ROWS, cols: COLS, pixel_width: 0, pixel_height: 0 })
            .expect("open a pty");
        let mut cmd = CommandBuilder::new(program);
        cmd.args(args);
        cmd.env("TERM", "xterm-256color");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = pty.slave.spawn_command(cmd).expect("spawn in the pty");
        let mut reader = pty.master.try_clone_reader().expect("pty reader");
        let writer: Arc<Mutex<Box<dyn Write + Send>>> =
            Arc::new(Mutex::new(pty.master.take_writer().expect("pty writer")));
        let parser = Arc::new(Mutex::new(vt100::Parser::new(ROWS.try_into().unwrap(), COLS.try_into().unwrap(), 2000)));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (p, r, w) = (parser.clone(), raw.clone(), writer.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let cursor = {
                    let mut parser = p.lock().unwrap();
                    parser.process(&buf[..n]);
                    parser.screen().cursor_position()
                };
                r.lock().unwrap().extend_from_slice(&buf[..n]);
                // Answer cursor position queries as a terminal does; inline
                // viewports ask where they start. (No lock is held while writing.)
                for _ in 0..count(&buf[..n], b"\x1b[6n") {
                    let _ = write!(w.lock().unwrap(), "\x1b[{};{}R", cursor.0 + 1, cursor.1 + 1);
                }
            }
        });
        Terminal { parser, raw, writer: Box::new(SharedWriter(writer)), child, _master: pty.master }
    }

    /// What the screen shows now, row by row, trailing spaces trimmed.
    pub fn screen(&self) -> String {
        let parser = self.parser.lock().unwrap();
        parser.screen().rows(0, COLS).map(|r| r.trim_end().to_string()).collect::<Vec<_>>().join("\n")
    }

    /// The screen plus everything scrolled off it.
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&vt100_strip(&self.raw.lock().unwrap())).into_owned()
    }

    /// Types text (no Enter).
    pub fn type_text(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    /// Types a line and presses Enter.
    pub fn type_line(&mut self, line: &str) {
        self.type_text(line);
        self.type_text("\r");
    }

    /// Presses Ctrl-<key>.
    pub fn ctrl(&mut self, key: char) {
        let code = (key.to_ascii_lowercase() as u8) & 0x1f;
        self.writer.write_all(&[code]).unwrap();
        self.writer.flush().unwrap();
    }

    /// Waits until `pred(screen)` holds; panics with the screen if it never does.
    pub fn wait_until(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                let raw = self.raw.lock().unwrap();
                let tail = String::from_utf8_lossy(&raw[raw.len().saturating_sub(1500)..]).escape_debug().to_string();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; screen:\n{screen}\n--- transcript:\n{}\n--- raw tail:\n{tail}",
                    self.transcript()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the screen contains `text`.
    pub fn wait_for(&self, text: &str, timeout: Duration) -> String {
        self.wait_until(&format!("{text:?}"), timeout, |s| s.contains(text))
    }

    /// Waits for the transcript (all output so far) to contain `text`.
    pub fn wait_in_transcript(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.transcript();
            if t.contains(text) {
                return t;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {text:?}; screen:\n{}\n--- transcript:\n{t}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The number of prompts (`>> ` at a line start) on the screen and above it.
    pub fn prompts(&self) -> usize {
        self.transcript().matches("\n>> ").count() + usize::from(self.transcript().starts_with(">> "))
    }

    /// Waits for the program to exit and returns whether it succeeded.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<bool> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The program's pid.
    pub fn pid(&self) -> u32 {
        self.child.process_id().unwrap_or(0)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct SharedWriter(Arc<Mutex<Box<dyn Write + Send>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap().flush()
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Output bytes with escape sequences removed and CR-LF made LF: a plain
/// transcript of what scrolled by.
fn vt100_strip(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            0x1b => {
                i += 1;
                match raw.get(i) {
                    Some(b'[') => {
                        i += 1;
                        while i < raw.len() && !(0x40..=0x7e).contains(&raw[i]) {
                            i += 1;
                        }
                    }
                    Some(b']') => {
                        while i < raw.len() && raw[i] != 0x07 && raw[i] != 0x1b {
                            i += 1;
                        }
                    }
                    _ => {}
                }
            }
            b'\r' => {}
            b => out.push(b),
        }
        i += 1;
    }
    out
}
