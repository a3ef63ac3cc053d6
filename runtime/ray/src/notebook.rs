//! Rich output for notebooks and the REPL.
//!
//! In Jupyter, a Ray user expects an `ObjectRef`, an actor handle or the context
//! `ray.init()` returns to render as something readable, and expects to be able to
//! show HTML or clear a cell's output from code. evcxr renders a cell's final value
//! by calling its `evcxr_display` method when there is one; [`RichRepr`] provides
//! that method for Ray's types (the prelude brings it into scope). [`display`] and
//! [`clear_output`] reach the front-end through the evaluation process's side
//! channel, in order with the cell's own prints. Outside a REPL or kernel they
//! print plain text, or nothing.

use crate::actor::Handle;
use crate::object_ref::ObjectRef;
use ray_abi::side_channel::{ChildEvent, escape_html};
use ray_abi::{RayError, RuntimeContext};
use std::collections::BTreeMap;
use std::io::Write;

/// A value with a plain-text and an HTML rendering, shown by notebooks and the REPL
/// when it is a cell's final value or passed to [`display`].
pub trait RichRepr {
    /// The plain-text rendering (terminals, and notebooks without HTML).
    fn repr_text(&self) -> String;

    /// The HTML rendering.
    fn repr_html(&self) -> String;

    /// Called by evcxr on a cell's final value: prints both renderings in evcxr's
    /// MIME framing.
    #[doc(hidden)]
    fn evcxr_display(&self) {
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "EVCXR_BEGIN_CONTENT text/plain\n{}\nEVCXR_END_CONTENT\nEVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT\n",
            self.repr_text(),
            self.repr_html()
        );
        let _ = out.flush();
    }
}

/// evcxr's plain rendering of any other cell value, without its second compile.
///
/// evcxr first compiles a cell's final value as `(value).evcxr_display()` and,
/// when that does not compile, compiles the cell again with `{:?}`: every cell
/// ending in a plain value paid two compiles. This trait gives every `Debug` value
/// an `evcxr_display`, found only after inherent methods and [`RichRepr`] (it takes
/// `&mut self`, which method lookup tries last), so the first compile succeeds.
/// Immutable variables cannot be borrowed mutably; those still take evcxr's path.
pub trait DebugRepr {
    /// Prints the value's `{:?}` as evcxr's text/plain output; `()` prints nothing.
    #[doc(hidden)]
    fn evcxr_display(&mut self);
}

impl<T: std::fmt::Debug> DebugRepr for T {
    fn evcxr_display(&mut self) {
        if std::any::type_name::<T>() == "()" {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "EVCXR_BEGIN_CONTENT text/plain\n{self:?}\nEVCXR_END_CONTENT\n");
        let _ = out.flush();
    }
}

/// Shows `value` as a separate output of the running cell (Jupyter's `display`).
pub fn display(value: &impl RichRepr) {
    emit_display(
        [("text/plain".to_string(), value.repr_text()), ("text/html".to_string(), value.repr_html())].into(),
        value.repr_text(),
    );
}

/// Shows an HTML fragment as an output of the running cell.
pub fn display_html(html: &str) {
    emit_display(
        [("text/plain".to_string(), "<HTML output>".to_string()), ("text/html".to_string(), html.to_string())].into(),
        html.to_string(),
    );
}

/// Clears the running cell's output; with `wait`, only once new output arrives,
/// which avoids flicker when redrawing.
pub fn clear_output(wait: bool) {
    if in_evaluation_process() {
        emit(&ChildEvent::ClearOutput { wait });
    }
}

fn emit_display(data: BTreeMap<String, String>, fallback: String) {
    if in_evaluation_process() {
        emit(&ChildEvent::Display { data });
    } else {
        println!("{fallback}");
    }
}

/// Whether this process is a REPL or kernel evaluation process (evcxr's child),
/// whose front-end understands the side channel.
fn in_evaluation_process() -> bool {
    std::env::var_os("EVCXR_IS_RUNTIME").is_some()
}

fn emit(event: &ChildEvent) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", event.encode());
    let _ = out.flush();
}

impl<T> RichRepr for ObjectRef<T> {
    fn repr_text(&self) -> String {
        format!("{self:?}")
    }

    fn repr_html(&self) -> String {
        let value_type = crate::codec::short_type_name(std::any::type_name::<T>());
        format!(
            "<code title=\"a reference to a {ty}; ray::get or .await it for the value\">{}</code>",
            escape_html(&self.repr_text()),
            ty = escape_html(&value_type),
        )
    }
}

/// Every generated actor handle (`ActorHandle<T>`) renders as `Actor(Class, id)`,
/// as Ray shows actors.
impl<H: Handle> RichRepr for H {
    fn repr_text(&self) -> String {
        let actor = self.actor_ref();
        format!("Actor({}, {})", actor.class, actor.id)
    }

    fn repr_html(&self) -> String {
        let actor = self.actor_ref();
        format!(
            "<code title=\"an actor handle; call its methods to run them on the actor\">Actor(<b>{}</b>, {})</code>",
            escape_html(&actor.class),
            actor.id
        )
    }
}

impl RichRepr for RuntimeContext {
    fn repr_text(&self) -> String {
        context_facts(self).iter().map(|(k, v)| format!("{k:<20} {v}")).collect::<Vec<_>>().join("\n")
    }

    /// A card like the one Ray shows for `ray.init()` in a notebook.
    fn repr_html(&self) -> String {
        let rows: String = context_facts(self)
            .iter()
            .map(|(k, v)| {
                format!(
                    "<tr><td style=\"text-align:left;padding:2px 12px 2px 0\"><b>{}</b></td>\
                     <td style=\"text-align:left;padding:2px 0\">{}</td></tr>",
                    escape_html(k),
                    escape_html(v)
                )
            })
            .collect();
        format!(
            "<div class=\"rayrepl-context\" style=\"border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;\
             display:inline-block;font-family:sans-serif;font-size:13px\">\
             <div style=\"font-weight:600;font-size:14px;margin-bottom:4px\">&#9728; Ray cluster (rayrepl)</div>\
             <table style=\"border-collapse:collapse\">{rows}</table></div>"
        )
    }
}

fn context_facts(ctx: &RuntimeContext) -> Vec<(&'static str, String)> {
    let mut facts = vec![
        ("Address", ctx.address.clone()),
        ("Nodes", ctx.nodes.to_string()),
        ("CPUs", format_amount(ctx.cpus)),
        ("Object store memory", format_bytes(ctx.object_store_memory)),
        ("Job", format!("{:08x}", ctx.job_id)),
        ("rayrepl version", ctx.version.clone()),
        ("Rust toolchain", ctx.toolchain.clone()),
    ];
    if ctx.gpus > 0.0 {
        facts.insert(3, ("GPUs", format_amount(ctx.gpus)));
    }
    facts
}

fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn format_amount(x: f64) -> String {
    if x.fract() == 0.0 { format!("{x:.0}") } else { format!("{x}") }
}

/// `ray::init()?` renders its context; so does `ray::init()` without the `?`.
impl<T: RichRepr> RichRepr for Result<T, RayError> {
    fn repr_text(&self) -> String {
        match self {
            Ok(v) => v.repr_text(),
            Err(e) => format!("Err({e})"),
        }
    }

    fn repr_html(&self) -> String {
        match self {
            Ok(v) => v.repr_html(),
            Err(e) => format!("<pre style=\"color:#b00\">Err({})</pre>", escape_html(&e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_card_names_the_cluster() {
        let ctx = RuntimeContext {
            address: "127.0.0.1:6379".into(),
            nodes: 3,
            cpus: 8.0,
            object_store_memory: 2 << 30,
            version: "0.1.0".into(),
            toolchain: "rustc 1.95.0".into(),
            ..RuntimeContext::default()
        };
        let html = ctx.repr_html();
        for needle in
            ["127.0.0.1:6379", "<td style=\"text-align:left;padding:2px 0\">3</td>", "8", "2.0 GiB", "rustc 1.95.0"]
        {
            assert!(html.contains(needle), "{needle} missing from {html}");
        }
        assert!(!html.contains("GPUs"));
        assert!(ctx.repr_text().lines().any(|l| l.starts_with("Nodes") && l.ends_with('3')));
    }
}
