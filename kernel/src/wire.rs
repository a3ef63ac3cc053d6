//! Reading requests and publishing on IOPub.
//!
//! jupyter-protocol rejects a request whose content lacks a field its struct
//! requires, and then the client waits forever for a reply. Real clients do send
//! such requests: jupyter_client's `history(hist_access_type="search")` leaves out
//! `n` and `unique`. So requests are read here from the raw frames, verified with
//! the connection's key, and a content that does not parse is kept as JSON for the
//! handler to read leniently.
//!
//! Everything the kernel publishes goes through one [`Publisher`], a channel to
//! the task that owns the IOPub socket, so the engine thread can publish while a
//! cell runs.

use jupyter_protocol::{Header, JupyterMessage, JupyterMessageContent, UnknownMessage};
use jupyter_zmq_client::{Connection, RawMessage};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;
use zeromq::SocketRecv;

/// A request as received: the parsed message, and its content as JSON.
pub(crate) struct Request {
    /// The message; its content is `UnknownMessage` when it did not parse.
    pub message: JupyterMessage,
    /// The content as sent.
    pub content: Value,
}

impl Request {
    /// The request's type, e.g. `execute_request`.
    pub fn msg_type(&self) -> &str {
        &self.message.header.msg_type
    }
}

/// Reads the next request from a shell or control socket.
pub(crate) async fn read_request<S: SocketRecv>(
    connection: &mut Connection<S>,
) -> Result<Request, jupyter_zmq_client::RuntimeError> {
    let raw = RawMessage::from_multipart(connection.socket.recv().await?, &connection.mac)?;
    let frame = |i: usize| raw.jparts.get(i).map(|b| b.as_ref()).unwrap_or(b"{}");
    let header: Header = serde_json::from_slice(frame(0))?;
    let content: Value = serde_json::from_slice(frame(3))?;
    let parsed = JupyterMessageContent::from_type_and_content(&header.msg_type, content.clone()).unwrap_or_else(|_| {
        JupyterMessageContent::UnknownMessage(UnknownMessage {
            msg_type: header.msg_type.clone(),
            content: content.clone(),
        })
    });
    let message = JupyterMessage {
        zmq_identities: raw.zmq_identities.clone(),
        parent_header: serde_json::from_slice(frame(1)).ok(),
        metadata: serde_json::from_slice(frame(2)).unwrap_or(Value::Object(Default::default())),
        content: parsed,
        buffers: raw.jparts.iter().skip(4).cloned().collect(),
        channel: None,
        header,
    };
    Ok(Request { message, content })
}

/// Publishes messages on IOPub from any thread.
#[derive(Clone)]
pub(crate) struct Publisher {
    sender: UnboundedSender<JupyterMessage>,
}

impl Publisher {
    pub fn new(sender: UnboundedSender<JupyterMessage>) -> Self {
        Publisher { sender }
    }

    /// Publishes `content` as a child of `parent`. A closed channel means the
    /// kernel is shutting down, when nobody is listening anyway.
    pub fn send(&self, content: impl Into<JupyterMessageContent>, parent: &JupyterMessage) {
        let _ = self.sender.send(JupyterMessage::new(content, Some(parent)));
    }

    /// Publishes `content` with no parent, as the `starting` status is.
    pub fn broadcast(&self, content: impl Into<JupyterMessageContent>) {
        let _ = self.sender.send(JupyterMessage::new(content, None));
    }
}
