//! Support for code typed into a REPL or notebook cell.
//!
//! A cell is not an async function, yet people write `square.remote(3).await` at
//! its top level, as they would in Python's notebooks. The session rewrites such an
//! `.await` into `AwaitInCell(x).wait_in_cell()`: on an `ObjectRef` that is
//! [`crate::get`], which reports progress and honours Ctrl-C; any other future is
//! driven to completion on the cell's thread.

use crate::ObjectRef;
use ray_abi::RayError;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::future::{Future, IntoFuture};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// A value awaited at the top level of a cell.
pub struct AwaitInCell<F>(pub F);

impl<T: DeserializeOwned + Any> AwaitInCell<ObjectRef<T>> {
    /// Waits for the object, like `ray::get`.
    pub fn wait_in_cell(self) -> Result<T, RayError> {
        self.0.get()
    }
}

impl<T: DeserializeOwned + Any> AwaitInCell<&ObjectRef<T>> {
    /// Waits for the object, like `ray::get`.
    pub fn wait_in_cell(self) -> Result<T, RayError> {
        self.0.get()
    }
}

/// Awaits any other future by blocking the cell's thread.
pub trait AwaitAnyFuture {
    /// The future's output.
    type Output;
    /// Drives the future to completion.
    fn wait_in_cell(self) -> Self::Output;
}

impl<F: IntoFuture> AwaitAnyFuture for AwaitInCell<F> {
    type Output = F::Output;
    fn wait_in_cell(self) -> F::Output {
        block_on(self.0.into_future())
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future on the current thread, parking between polls.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
