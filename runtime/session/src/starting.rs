//! A session that starts while its front-end is already in use.
//!
//! Starting a session takes seconds, and none of them is needed to show a prompt:
//! on this 2-core machine (release build) evcxr's first evaluation takes about
//! 3 s, nearly all of it rust-analyzer reading std, and the prelude about 2.7 s,
//! rust-analyzer reading the `ray` crate's dependencies; then the first `let` or
//! completion would wait another 2.5 s while it collects every crate's impls.
//! [`SharedSession`] starts the session on its own thread, so a person types while
//! it starts; a cell waits for it, a completion answers nothing until it is
//! there, and the rust-analyzer warm-up runs only once nobody has wanted the
//! session for a moment, so it never holds up a cell that was already typed.

use crate::{Reserved, Session};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// How long the session must go unwanted before the warm-up takes it: a cell
/// typed ahead is asked for within this after the session is ready.
const IDLE_BEFORE_WARM_UP: Duration = Duration::from_millis(300);

/// A session shared by a front-end's threads, possibly still starting.
#[derive(Clone)]
pub struct SharedSession {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Callers blocked in [`SharedSession::wait`]: the warm-up yields to them.
    waiting: AtomicUsize,
    /// Whether the warm-up holds the session (readable without the lock it holds).
    warming: AtomicBool,
}

enum State {
    Starting,
    Ready { session: Box<Session>, last_used: Instant },
    Failed(String),
}

/// The session, held: other threads wait until this drops.
pub struct SessionGuard<'a> {
    state: MutexGuard<'a, State>,
}

impl std::ops::Deref for SessionGuard<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        match &*self.state {
            State::Ready { session, .. } => session,
            // A guard is only made from a ready state, which never changes back.
            State::Starting | State::Failed(_) => unreachable!("a session guard holds a ready session"),
        }
    }
}

impl std::ops::DerefMut for SessionGuard<'_> {
    fn deref_mut(&mut self) -> &mut Session {
        match &mut *self.state {
            State::Ready { session, .. } => session,
            State::Starting | State::Failed(_) => unreachable!("a session guard holds a ready session"),
        }
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        // Idle time, which the warm-up waits for, counts from here.
        if let State::Ready { last_used, .. } = &mut *self.state {
            *last_used = Instant::now();
        }
    }
}

impl SharedSession {
    /// Starts the reserved session on a thread of its own, then warms rust-analyzer
    /// up once the session has gone unwanted for a moment.
    pub fn start(reserved: Reserved) -> SharedSession {
        let shared = Arc::new(Shared::new(State::Starting));
        let starting = shared.clone();
        std::thread::Builder::new()
            .name("session-start".into())
            .spawn(move || {
                let started = reserved.start(|_| {}).map_err(|e| e.to_string());
                *starting.lock() = match started {
                    Ok(session) => State::Ready { session: Box::new(session), last_used: Instant::now() },
                    Err(e) => State::Failed(e),
                };
                starting.changed.notify_all();
                starting.warm_up_when_idle();
            })
            .expect("spawn the session's start thread");
        SharedSession { shared }
    }

    /// A session that has already started.
    pub fn ready(session: Session) -> SharedSession {
        let state = State::Ready { session: Box::new(session), last_used: Instant::now() };
        let shared = Arc::new(Shared::new(state));
        let warming = shared.clone();
        std::thread::Builder::new()
            .name("session-warm-up".into())
            .spawn(move || warming.warm_up_when_idle())
            .expect("spawn the session's warm-up thread");
        SharedSession { shared }
    }

    /// Waits for the session, calling `tick` about every `every` while it starts
    /// or another thread holds it; `tick` returning false gives up (`Ok(None)`).
    /// An error says why the session could not start.
    pub fn wait(&self, every: Duration, mut tick: impl FnMut() -> bool) -> Result<Option<SessionGuard<'_>>, String> {
        self.shared.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Decrement(&self.shared.waiting);
        loop {
            // Held by a cell or the warm-up for a while: ask again after a tick.
            if let Some(state) = self.shared.try_lock() {
                let (state, _) = self
                    .shared
                    .changed
                    .wait_timeout_while(state, every, |s| matches!(s, State::Starting))
                    .unwrap_or_else(|p| p.into_inner());
                match &*state {
                    State::Ready { .. } => return Ok(Some(SessionGuard { state })),
                    State::Failed(e) => return Err(e.clone()),
                    State::Starting => {}
                }
            } else {
                std::thread::sleep(every.min(Duration::from_millis(20)));
            }
            if !tick() {
                return Ok(None);
            }
        }
    }

    /// The session if it is ready and nobody holds it (for completion, which must
    /// not keep a person waiting).
    pub fn try_now(&self) -> Option<SessionGuard<'_>> {
        let state = self.shared.try_lock()?;
        matches!(*state, State::Ready { .. }).then_some(SessionGuard { state })
    }

    /// What a caller of [`SharedSession::wait`] is waiting for, in words for a
    /// person, or None when the session is free or held by another cell. Never
    /// blocks.
    pub fn waiting_for(&self) -> Option<&'static str> {
        if self.shared.warming.load(Ordering::SeqCst) {
            return Some("rust-analyzer is finishing loading the ray crate");
        }
        match self.shared.try_lock().as_deref() {
            Some(State::Starting) => Some("the evaluator is still starting"),
            _ => None,
        }
    }
}

impl Shared {
    fn new(state: State) -> Shared {
        Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
            waiting: AtomicUsize::new(0),
            warming: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state unless another thread holds it. A cell that panicked while
    /// holding it left the session as it was, which is still usable.
    fn try_lock(&self) -> Option<MutexGuard<'_, State>> {
        match self.state.try_lock() {
            Ok(state) => Some(state),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Warms rust-analyzer up once nobody has waited for or used the session for
    /// [`IDLE_BEFORE_WARM_UP`]; a session that failed to start has nothing to warm.
    fn warm_up_when_idle(&self) {
        loop {
            std::thread::sleep(IDLE_BEFORE_WARM_UP / 3);
            if self.waiting.load(Ordering::SeqCst) > 0 {
                continue;
            }
            let Some(mut state) = self.try_lock() else { continue };
            match &mut *state {
                State::Ready { session, last_used } if last_used.elapsed() >= IDLE_BEFORE_WARM_UP => {
                    self.warming.store(true, Ordering::SeqCst);
                    session.warm_up();
                    self.warming.store(false, Ordering::SeqCst);
                    return;
                }
                State::Ready { .. } | State::Starting => {}
                State::Failed(_) => return,
            }
        }
    }
}

/// Counts a waiter out when its wait ends, however it ends.
struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
