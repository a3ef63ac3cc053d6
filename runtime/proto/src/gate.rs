//! Keeping a listener open for its peers while someone floods it with connections.
//!
//! The token is checked per call, so a connection that never makes a call is
//! never checked. About 20,000 idle connections, none of which sent a byte, once
//! took the head to its file-descriptor limit, and `rayrepl status` and new
//! drivers failed until they closed. Anyone on the machine could do that.
//!
//! A [`Gate`] admits every connection but holds it as *waiting* until a call on
//! it presents the cluster token ([`Peer::authenticated`], which
//! [`crate::CheckToken`] calls). A waiting connection is closed after
//! [`AUTH_DEADLINE`]; when more than the gate's cap wait, one is closed to make
//! room, and so is one when the process runs out of descriptors: the oldest of
//! those that have not sent a byte, else the oldest. A flood's connections are
//! silent, while a real peer sends its HTTP/2 preface at once, so a sustained
//! flood does not push out a peer that is slow to send its first call. A flood then
//! costs at most the cap in descriptors, and a real peer, which presents its token
//! in its first round trip, gets in while it goes on. Connections are closed by
//! `shutdown(2)`, which the connection's reader sees as its end, so closing one
//! never races its owner's use of the descriptor. Every gate also raises the
//! process's descriptor soft limit to the hard limit, once.
//!
//! [`Admission`] decides, without I/O, which connections to close; the gated
//! stream and the listener loop act on it.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long a connection may take to present the token. A real peer needs one
/// round trip; a peer whose process is stopped before its first call reconnects.
pub const AUTH_DEADLINE: Duration = Duration::from_secs(5);
/// The most connections that may wait for their token at once, unless the
/// descriptor limit asks for fewer (a quarter of it).
pub const MAX_WAITING: usize = 1024;

/// Which connections wait for their token, oldest first, and which to close.
#[derive(Debug)]
pub struct Admission {
    /// Waiting connections by id, with their deadlines; ids grow, so the first
    /// is the oldest.
    waiting: BTreeMap<u64, Instant>,
    /// The waiting connections that have sent nothing yet, the first to go.
    silent: std::collections::BTreeSet<u64>,
    next_id: u64,
    cap: usize,
    deadline: Duration,
}

impl Admission {
    /// At most `cap` waiting connections, each for at most `deadline`.
    pub fn new(cap: usize, deadline: Duration) -> Self {
        Admission { waiting: BTreeMap::new(), silent: Default::default(), next_id: 0, cap: cap.max(1), deadline }
    }

    /// Admits a connection at `now`: its id, and the ids to close to make room.
    pub fn admit(&mut self, now: Instant) -> (u64, Vec<u64>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut close = Vec::new();
        while self.waiting.len() >= self.cap {
            close.extend(self.oldest());
        }
        self.waiting.insert(id, now + self.deadline);
        self.silent.insert(id);
        (id, close)
    }

    /// `id` sent its first bytes: it goes after the silent ones.
    pub fn talking(&mut self, id: u64) {
        self.silent.remove(&id);
    }

    /// A call on `id` presented the token: it no longer waits.
    pub fn authenticated(&mut self, id: u64) {
        self.closed(id);
    }

    /// `id` is closed.
    pub fn closed(&mut self, id: u64) {
        self.waiting.remove(&id);
        self.silent.remove(&id);
    }

    /// The waiting connections whose time is up at `now`; they no longer wait.
    pub fn overdue(&mut self, now: Instant) -> Vec<u64> {
        let overdue: Vec<u64> = self.waiting.iter().filter(|(_, due)| **due <= now).map(|(id, _)| *id).collect();
        for id in &overdue {
            self.closed(*id);
        }
        overdue
    }

    /// The waiting connection to close to make room: the oldest silent one,
    /// else the oldest. It no longer waits.
    pub fn oldest(&mut self) -> Option<u64> {
        let id = self.silent.first().or_else(|| self.waiting.keys().next()).copied()?;
        self.closed(id);
        Some(id)
    }

    /// When the next waiting connection's time is up.
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting.values().min().copied()
    }

    /// How many connections wait.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

struct GateState {
    admission: Admission,
    /// The descriptors of open connections, to shut down by id. An entry goes
    /// (under this lock) before its descriptor is closed.
    open: HashMap<u64, RawFd>,
}

/// A listener's gate; see the module header.
pub struct Gate {
    state: Mutex<GateState>,
}

impl Gate {
    fn new() -> Arc<Self> {
        let limit = raise_fd_limit();
        let cap = MAX_WAITING.min((limit / 4) as usize);
        Arc::new(Gate {
            state: Mutex::new(GateState { admission: Admission::new(cap, AUTH_DEADLINE), open: HashMap::new() }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(self: &Arc<Self>, stream: TcpStream) -> Gated {
        let remote = stream.peer_addr().ok();
        let mut state = self.lock();
        let (id, close) = state.admission.admit(Instant::now());
        state.open.insert(id, stream.as_raw_fd());
        shut_down(&state, &close);
        drop(state);
        let ticket = Arc::new(Ticket {
            id,
            authenticated: AtomicBool::new(false),
            talking: AtomicBool::new(false),
            gate: Arc::downgrade(self),
        });
        Gated { stream, peer: Peer { remote, ticket } }
    }

    /// Closes the oldest waiting connection to free a descriptor; whether there was one.
    fn free_one(&self) -> bool {
        let mut state = self.lock();
        let oldest = state.admission.oldest();
        shut_down(&state, oldest.as_slice());
        oldest.is_some()
    }

    /// Closes waiting connections as their time runs out, until the gate's
    /// listener is gone. It looks at least every [`CHECK_EVERY`], so a connection
    /// admitted meanwhile is closed at most that late.
    async fn close_overdue(gate: Weak<Gate>) {
        const CHECK_EVERY: Duration = Duration::from_secs(1);
        loop {
            let Some(gate) = gate.upgrade() else { return };
            let now = Instant::now();
            let due = {
                let mut state = gate.lock();
                let overdue = state.admission.overdue(now);
                if !overdue.is_empty() {
                    tracing::debug!("closing {} connections that did not present the token in time", overdue.len());
                }
                shut_down(&state, &overdue);
                state.admission.next_due()
            };
            drop(gate);
            let next = due.map_or(now + CHECK_EVERY, |due| due.min(now + CHECK_EVERY));
            tokio::time::sleep_until(next.into()).await;
        }
    }
}

fn shut_down(state: &GateState, ids: &[u64]) {
    for id in ids {
        if let Some(fd) = state.open.get(id) {
            // SAFETY: `fd` is open: an entry leaves `open` under the lock we hold,
            // before its stream closes the descriptor. shutdown(2) only ends the
            // connection; the descriptor stays its stream's to close.
            unsafe {
                libc::shutdown(*fd, libc::SHUT_RDWR);
            }
        }
    }
}

struct Ticket {
    id: u64,
    authenticated: AtomicBool,
    /// Whether the peer has sent a byte yet.
    talking: AtomicBool,
    gate: Weak<Gate>,
}

/// Who is at the other end of a gated connection; every call on it carries this
/// in its extensions.
#[derive(Clone)]
pub struct Peer {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    ticket: Arc<Ticket>,
}

impl Peer {
    /// A call on this connection presented the token: it may stay open.
    pub fn authenticated(&self) {
        // Every call comes here: a load first keeps the common case a read.
        if !self.ticket.authenticated.load(Ordering::Relaxed)
            && !self.ticket.authenticated.swap(true, Ordering::Relaxed)
            && let Some(gate) = self.ticket.gate.upgrade()
        {
            gate.lock().admission.authenticated(self.ticket.id);
        }
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("remote", &self.remote).field("id", &self.ticket.id).finish()
    }
}

/// A connection admitted by a [`Gate`].
pub struct Gated {
    stream: TcpStream,
    peer: Peer,
}

impl Gated {
    /// Who is at the other end.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        if let Some(gate) = self.peer.ticket.gate.upgrade() {
            let mut state = gate.lock();
            state.open.remove(&self.peer.ticket.id);
            state.admission.closed(self.peer.ticket.id);
        }
    }
}

impl AsyncRead for Gated {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        let ticket = &self.peer.ticket;
        // Every read comes here: a load first keeps the common case a read.
        if buf.filled().len() > before
            && !ticket.talking.load(Ordering::Relaxed)
            && !ticket.talking.swap(true, Ordering::Relaxed)
            && !ticket.authenticated.load(Ordering::Relaxed)
            && let Some(gate) = ticket.gate.upgrade()
        {
            gate.lock().admission.talking(ticket.id);
        }
        read
    }
}

impl AsyncWrite for Gated {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Gated {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// A listener whose connections pass through a gate of their own.
pub struct GatedListener {
    listener: TcpListener,
    gate: Arc<Gate>,
}

impl GatedListener {
    /// Gates `listener`'s connections until this is dropped.
    pub fn new(listener: TcpListener) -> Self {
        let gate = Gate::new();
        tokio::spawn(Gate::close_overdue(Arc::downgrade(&gate)));
        GatedListener { listener, gate }
    }

    /// The next connection, with Nagle's algorithm off: every message here is
    /// latency-bound, and a delayed ACK would cost 40 ms a call. A failed accept
    /// (out of descriptors, say) is retried, after freeing a waiting connection's
    /// descriptor or a short pause.
    pub async fn accept(&self) -> Gated {
        let mut warned = false;
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return self.gate.admit(stream);
                }
                Err(e) => {
                    let out_of_descriptors = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    if !warned {
                        tracing::warn!(
                            "cannot accept a connection: {e}; closing connections that never presented the token"
                        );
                        warned = true;
                    }
                    if !(out_of_descriptors && self.gate.free_one()) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Connections accepted on `listener` through a new gate, as a server's stream.
pub fn gated(listener: TcpListener) -> impl futures_util::Stream<Item = io::Result<Gated>> + Send + 'static {
    futures_util::stream::unfold(GatedListener::new(listener), |listener| async move {
        let stream = listener.accept().await;
        Some((Ok(stream), listener))
    })
}

/// Raises this process's descriptor soft limit to its hard limit, once; returns
/// the soft limit.
pub fn raise_fd_limit() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit into the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            // SAFETY: setrlimit reads the struct we pass; raising the soft limit
            // up to the hard one needs no privilege.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        limit.rlim_cur
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_oldest_waiting_connection_makes_room_and_authenticated_ones_never_do() {
        let t0 = Instant::now();
        let mut a = Admission::new(2, AUTH_DEADLINE);
        let (first, none) = a.admit(t0);
        assert!(none.is_empty());
        let (second, _) = a.admit(t0);
        a.authenticated(second);
        let (third, _) = a.admit(t0);
        let (_, close) = a.admit(t0);
        assert_eq!(close, vec![first], "the oldest waiting one goes, not the authenticated one");
        assert_eq!(a.overdue(t0 + AUTH_DEADLINE), vec![third, third + 1]);
        assert_eq!(a.waiting(), 0);
        assert_eq!(a.next_due(), None);
    }

    #[test]
    fn a_connection_that_talks_outlasts_a_silent_flood() {
        let t0 = Instant::now();
        let mut a = Admission::new(2, AUTH_DEADLINE);
        let (peer, _) = a.admit(t0);
        a.talking(peer);
        let mut closed = Vec::new();
        for _ in 0..100 {
            closed.extend(a.admit(t0).1);
        }
        assert!(!closed.contains(&peer), "the flood pushed out a peer that had started talking");
        assert_eq!(closed.len(), 99, "each silent connection made room for the next");
        assert_eq!(a.oldest(), Some(100), "the silent one goes first to free a descriptor");
        assert_eq!(a.oldest(), Some(peer), "then the one that talks");
    }

    #[derive(Debug, Clone)]
    enum Event {
        Connect,
        Talk(usize),
        Authenticate(usize),
        Close(usize),
        Wait(u64),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => Just(Event::Connect),
            2 => (0usize..64).prop_map(Event::Talk),
            2 => (0usize..64).prop_map(Event::Authenticate),
            1 => (0usize..64).prop_map(Event::Close),
            1 => (0u64..3_000).prop_map(Event::Wait),
        ]
    }

    proptest! {
        /// Never more than the cap wait; an authenticated connection is never
        /// closed; a waiting one is closed by its deadline; one that talks is
        /// closed to make room only when no silent one waits.
        #[test]
        fn waiting_is_bounded_and_only_the_unauthenticated_are_closed(
            cap in 1usize..8,
            events in prop::collection::vec(event(), 1..200),
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut a = Admission::new(cap, Duration::from_secs(5));
            // id -> (admitted at, authenticated, closed)
            let mut conns: Vec<(Instant, bool, bool)> = Vec::new();
            let mut talking: Vec<bool> = Vec::new();
            for ev in events {
                let mut closing = Vec::new();
                match ev {
                    Event::Connect => {
                        let silent_waiting =
                            conns.iter().zip(&talking).filter(|((_, auth, closed), talks)| !auth && !closed && !**talks).count();
                        let (id, close) = a.admit(now);
                        prop_assert_eq!(id as usize, conns.len());
                        for old in &close {
                            prop_assert!(
                                !talking[*old as usize] || silent_waiting == 0,
                                "a talking connection made room while a silent one waited"
                            );
                        }
                        conns.push((now, false, false));
                        talking.push(false);
                        closing = close;
                    }
                    Event::Talk(i) if i < conns.len() && !conns[i].2 => {
                        talking[i] = true;
                        a.talking(i as u64);
                    }
                    Event::Authenticate(i) if i < conns.len() && !conns[i].2 => {
                        conns[i].1 = true;
                        a.authenticated(i as u64);
                    }
                    Event::Close(i) if i < conns.len() => {
                        conns[i].2 = true;
                        a.closed(i as u64);
                    }
                    Event::Wait(ms) => {
                        now += Duration::from_millis(ms);
                        closing = a.overdue(now);
                    }
                    _ => {}
                }
                for id in closing {
                    let c = &mut conns[id as usize];
                    prop_assert!(!c.1, "an authenticated connection was closed");
                    prop_assert!(!c.2, "a closed connection was closed again");
                    c.2 = true;
                }
                prop_assert!(a.waiting() <= cap);
                for (admitted, authenticated, closed) in &conns {
                    if !authenticated && !closed {
                        prop_assert!(now < *admitted + Duration::from_secs(5), "a waiting connection outlived its deadline");
                    }
                }
            }
        }
    }
}
