//! `ObjectRef<T>`: a reference to an object in the cluster, like Ray's `ObjectRef`.
//!
//! A ref counts as a reference for the object's owner while it exists, so the
//! object is freed once no ref remains anywhere. Clones share one counted handle
//! (an `Arc`): `ray::wait` in a loop clones every ref it is given on each call,
//! and telling the host about each clone cost more than the wait itself.
//! Refs serialize (inside task arguments, return values or `put` values) as the
//! object id plus the owner's address; the receiving process adopts them as borrowed
//! refs. A ref whose submission failed carries the error and returns it from `get`.

use crate::codec;
use crate::host::{self, Lent};
use ray_abi::{HostBuf, ObjectId, RayError, Slice};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::any::Any;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// A reference to an object of type `T` that a task returned or `put` stored.
pub struct ObjectRef<T> {
    handle: Arc<Handle>,
    _type: PhantomData<fn() -> T>,
}

/// What clones of a ref share: one local reference counted by the host.
struct Handle {
    id: ObjectId,
    /// Set when submission failed locally; `get` returns it.
    failed: Option<RayError>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.failed.is_none()
            && let Ok(t) = host::table()
        {
            // SAFETY: `id` points to a live ObjectId for the duration of the call.
            unsafe { (t.remove_local_ref)(&self.id) }
        }
    }
}

impl<T> ObjectRef<T> {
    /// Wraps an id for which the host already counted one local reference.
    pub(crate) fn from_counted(id: ObjectId) -> Self {
        ObjectRef { handle: Arc::new(Handle { id, failed: None }), _type: PhantomData }
    }

    /// A ref whose creation failed; `get` returns the error.
    pub(crate) fn failed(err: RayError) -> Self {
        ObjectRef { handle: Arc::new(Handle { id: ObjectId::default(), failed: Some(err) }), _type: PhantomData }
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.handle.id
    }

    /// Ray's `ObjectRef.hex()`.
    pub fn hex(&self) -> String {
        self.handle.id.to_string()
    }

    pub(crate) fn failure(&self) -> Option<&RayError> {
        self.handle.failed.as_ref()
    }

    /// Reinterprets the ref as holding a `U`. Nothing is checked now; `get` reports
    /// a type mismatch if the object does not hold a `U`. Useful to gather refs of
    /// different types, as `ray::wait` on Python lists does.
    pub fn cast<U>(self) -> ObjectRef<U> {
        ObjectRef { handle: self.handle, _type: PhantomData }
    }
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        ObjectRef { handle: self.handle.clone(), _type: PhantomData }
    }
}

impl<T> fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.handle.failed {
            None => write!(f, "ObjectRef({})", self.handle.id),
            Some(e) => write!(f, "ObjectRef(failed: {e})"),
        }
    }
}

impl<T> fmt::Display for ObjectRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl<T> PartialEq for ObjectRef<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id() && self.failure().is_none() && other.failure().is_none()
    }
}

impl<T> Eq for ObjectRef<T> {}

impl<T> std::hash::Hash for ObjectRef<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id().hash(state)
    }
}

#[derive(Serialize, Deserialize)]
struct WireRef {
    id: ObjectId,
    owner: String,
}

impl<T> Serialize for ObjectRef<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        if let Some(e) = self.failure() {
            return Err(S::Error::custom(format!("cannot send a failed ObjectRef: {e}")));
        }
        let t = host::table().map_err(S::Error::custom)?;
        let mut out = HostBuf::EMPTY;
        let mut err = HostBuf::EMPTY;
        // SAFETY: all pointers are to live locals for the duration of the call.
        let status = unsafe { (t.owner_of)(&self.handle.id, &mut out, &mut err) };
        host::check(t, status, err).map_err(S::Error::custom)?;
        let owner = String::from_utf8_lossy(Lent::new(t, out).bytes()).into_owned();
        codec::note_contained(self.id());
        WireRef { id: self.id(), owner }.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for ObjectRef<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wire = WireRef::deserialize(d)?;
        let t = host::table().map_err(D::Error::custom)?;
        let mut err = HostBuf::EMPTY;
        // SAFETY: pointers are to live locals; the owner slice outlives the call.
        let status = unsafe { (t.adopt_ref)(&wire.id, Slice::of(wire.owner.as_bytes()), &mut err) };
        host::check(t, status, err).map_err(D::Error::custom)?;
        Ok(ObjectRef::from_counted(wire.id))
    }
}

pub(crate) fn timeout_ms(timeout: Option<Duration>) -> i64 {
    match timeout {
        None => -1,
        Some(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
    }
}

impl<T: DeserializeOwned + Any> ObjectRef<T> {
    /// Waits for the object and decodes it; `None` waits forever.
    pub fn get_timeout(&self, timeout: Option<Duration>) -> Result<T, RayError> {
        if let Some(e) = self.failure() {
            return Err(e.clone());
        }
        let t = host::table()?;
        let mut out = HostBuf::EMPTY;
        let mut err = HostBuf::EMPTY;
        // SAFETY: pointers are to live locals for the duration of the call.
        let status = unsafe { (t.get)(&self.handle.id, timeout_ms(timeout), &mut out, &mut err) };
        host::check(t, status, err)?;
        let lent = Lent::new(t, out);
        codec::decode(lent.bytes(), &self.handle.id)
    }

    /// Waits for the object and decodes it.
    pub fn get(&self) -> Result<T, RayError> {
        self.get_timeout(None)
    }
}

struct ReadyState {
    ready: bool,
    waker: Option<Waker>,
}

/// The future behind `ObjectRef::await`.
pub struct ObjectFuture<T> {
    obj: ObjectRef<T>,
    state: Option<Arc<Mutex<ReadyState>>>,
}

unsafe extern "C" fn wake_ready(data: *mut std::ffi::c_void) {
    // SAFETY: `data` is the pointer produced by `Arc::into_raw` in `poll`; the host
    // calls this callback exactly once, so the Arc is reclaimed exactly once.
    let state = unsafe { Arc::from_raw(data as *const Mutex<ReadyState>) };
    let waker = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.ready = true;
        s.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

impl<T: DeserializeOwned + Any> Future for ObjectFuture<T> {
    type Output = Result<T, RayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.obj.failure().is_some() {
            return Poll::Ready(this.obj.get());
        }
        let table = match host::table() {
            Ok(t) => t,
            Err(e) => return Poll::Ready(Err(e)),
        };
        match &this.state {
            None => {
                let state = Arc::new(Mutex::new(ReadyState { ready: false, waker: Some(cx.waker().clone()) }));
                let raw = Arc::into_raw(state.clone()) as *mut std::ffi::c_void;
                this.state = Some(state);
                // SAFETY: the id is live for the call; `raw` is an owned Arc pointer
                // handed to the host, which calls `wake_ready` with it exactly once.
                unsafe { (table.on_ready)(&this.obj.handle.id, wake_ready, raw) };
                Poll::Pending
            }
            Some(state) => {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                if s.ready {
                    drop(s);
                    Poll::Ready(this.obj.get_timeout(Some(Duration::ZERO)))
                } else {
                    s.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }
}

impl<T: DeserializeOwned + Any> IntoFuture for ObjectRef<T> {
    type Output = Result<T, RayError>;
    type IntoFuture = ObjectFuture<T>;

    fn into_future(self) -> Self::IntoFuture {
        ObjectFuture { obj: self, state: None }
    }
}

impl<T: DeserializeOwned + Any> IntoFuture for &ObjectRef<T> {
    type Output = Result<T, RayError>;
    type IntoFuture = ObjectFuture<T>;

    fn into_future(self) -> Self::IntoFuture {
        ObjectFuture { obj: self.clone(), state: None }
    }
}
