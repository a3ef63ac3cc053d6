//! Utilities Ray users reach for: `ray.util.queue.Queue` and `ray.util.ActorPool`,
//! built on actors, and placement groups with the scheduling strategies
//! ([`placement_group`]).

mod placement_group;

pub use placement_group::{
    GroupState, NodeAffinitySchedulingStrategy, PlacementGroup, PlacementGroupOptions,
    PlacementGroupSchedulingStrategy, PlacementGroupState, SchedulingStrategy, Steer, Strategy,
    get_current_placement_group, get_placement_group, get_placement_group_in, placement_group, placement_group_table,
    placement_group_with, remove_placement_group,
};

use crate::actor::Handle;
use crate::{ObjectRef, RayError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::any::Any;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::Duration;

/// The actor behind [`Queue`]: items are kept encoded, so one actor type serves
/// queues of every item type.
#[ray::remote(max_concurrency = 1000)]
pub struct QueueActor {
    items: std::sync::Mutex<VecDeque<Vec<u8>>>,
    maxsize: usize,
    changed: tokio::sync::Notify,
}

impl QueueActor {
    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<Vec<u8>>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn wait_until(
        &self,
        deadline: Option<tokio::time::Instant>,
        notified: tokio::sync::futures::Notified<'_>,
    ) -> bool {
        match deadline {
            None => {
                notified.await;
                true
            }
            Some(d) => tokio::time::timeout_at(d, notified).await.is_ok(),
        }
    }
}

#[ray::remote]
impl QueueActor {
    fn new(maxsize: usize) -> Self {
        QueueActor { items: Default::default(), maxsize, changed: tokio::sync::Notify::new() }
    }

    /// Adds an item, waiting up to `timeout_ms` (forever if `None`) for room.
    async fn put(&self, item: Vec<u8>, timeout_ms: Option<u64>) -> bool {
        let deadline = timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        let mut item = Some(item);
        loop {
            let notified = self.changed.notified();
            {
                let mut items = self.items();
                if self.maxsize == 0 || items.len() < self.maxsize {
                    items.push_back(item.take().expect("put once"));
                    drop(items);
                    self.changed.notify_waiters();
                    return true;
                }
            }
            if !self.wait_until(deadline, notified).await {
                return false;
            }
        }
    }

    /// Takes the oldest item, waiting up to `timeout_ms` (forever if `None`).
    async fn get(&self, timeout_ms: Option<u64>) -> Option<Vec<u8>> {
        let deadline = timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        loop {
            let notified = self.changed.notified();
            if let Some(item) = self.items().pop_front() {
                self.changed.notify_waiters();
                return Some(item);
            }
            if !self.wait_until(deadline, notified).await {
                return None;
            }
        }
    }

    fn qsize(&self) -> usize {
        self.items().len()
    }
}

/// A first-in, first-out queue shared by tasks and actors, like Ray's
/// `ray.util.queue.Queue`. Pass it to tasks; every copy talks to the same actor.
pub struct Queue<T> {
    actor: QueueActorHandle,
    maxsize: usize,
    _items: PhantomData<fn() -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { actor: self.actor.clone(), maxsize: self.maxsize, _items: PhantomData }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Queue(maxsize={}, {:?})", self.maxsize, self.actor)
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.actor, self.maxsize).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (actor, maxsize) = <(QueueActorHandle, usize)>::deserialize(d)?;
        Ok(Queue { actor, maxsize, _items: PhantomData })
    }
}

fn millis(t: Option<Duration>) -> Option<u64> {
    t.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl<T: Serialize + DeserializeOwned + Any> Queue<T> {
    /// A queue holding at most `maxsize` items (0: unbounded).
    pub fn new(maxsize: usize) -> Result<Self, RayError> {
        Ok(Queue { actor: QueueActor::remote(maxsize)?, maxsize, _items: PhantomData })
    }

    /// Adds an item, waiting for room if the queue is full.
    pub fn put(&self, item: &T) -> Result<(), RayError> {
        self.put_timeout(item, None)
    }

    /// Adds an item, waiting at most `timeout` for room ([`RayError::QueueFull`] after).
    pub fn put_timeout(&self, item: &T, timeout: Option<Duration>) -> Result<(), RayError> {
        let bytes = crate::codec::encode(item)?.to_vec();
        if self.actor.put(bytes, millis(timeout)).get()? { Ok(()) } else { Err(RayError::QueueFull) }
    }

    /// Adds an item if there is room now.
    pub fn put_nowait(&self, item: &T) -> Result<(), RayError> {
        self.put_timeout(item, Some(Duration::ZERO))
    }

    /// Takes the oldest item, waiting for one if the queue is empty.
    pub fn get(&self) -> Result<T, RayError> {
        self.get_timeout(None)
    }

    /// Takes the oldest item, waiting at most `timeout` ([`RayError::QueueEmpty`] after).
    pub fn get_timeout(&self, timeout: Option<Duration>) -> Result<T, RayError> {
        match self.actor.get(millis(timeout)).get()? {
            Some(bytes) => crate::codec::decode(&bytes, &"a queue item"),
            None => Err(RayError::QueueEmpty),
        }
    }

    /// Takes an item if there is one now.
    pub fn get_nowait(&self) -> Result<T, RayError> {
        self.get_timeout(Some(Duration::ZERO))
    }

    /// Number of items now.
    pub fn size(&self) -> Result<usize, RayError> {
        self.actor.qsize().get()
    }

    /// Whether the queue holds no item now.
    pub fn is_empty(&self) -> Result<bool, RayError> {
        Ok(self.size()? == 0)
    }

    /// Whether the queue has no room now.
    pub fn is_full(&self) -> Result<bool, RayError> {
        Ok(self.maxsize > 0 && self.size()? >= self.maxsize)
    }

    /// Ends the queue's actor.
    pub fn shutdown(self) -> Result<(), RayError> {
        crate::actor::kill(&self.actor)
    }
}

type Submit<H, R> = Box<dyn FnOnce(&H) -> ObjectRef<R>>;

/// Spreads work over a fixed set of actors, like Ray's `ray.util.ActorPool`: each
/// actor runs one call at a time, and results come back in submission order
/// ([`ActorPool::get_next`]) or as they finish ([`ActorPool::get_next_unordered`]).
pub struct ActorPool<H, R> {
    idle: VecDeque<H>,
    in_flight: VecDeque<(ObjectRef<R>, H)>,
    waiting: VecDeque<Submit<H, R>>,
}

impl<H: Handle, R: DeserializeOwned + Any> ActorPool<H, R> {
    /// A pool over `actors`.
    pub fn new(actors: impl IntoIterator<Item = H>) -> Self {
        ActorPool { idle: actors.into_iter().collect(), in_flight: VecDeque::new(), waiting: VecDeque::new() }
    }

    /// Runs `f(actor, value)` on an idle actor, or when one frees up.
    pub fn submit<V: 'static>(&mut self, f: impl FnOnce(&H, V) -> ObjectRef<R> + 'static, value: V) {
        let call: Submit<H, R> = Box::new(move |a| f(a, value));
        match self.idle.pop_front() {
            Some(actor) => {
                let r = call(&actor);
                self.in_flight.push_back((r, actor));
            }
            None => self.waiting.push_back(call),
        }
    }

    /// Whether results are outstanding.
    pub fn has_next(&self) -> bool {
        !self.in_flight.is_empty() || !self.waiting.is_empty()
    }

    /// Whether an actor is idle.
    pub fn has_free(&self) -> bool {
        !self.idle.is_empty()
    }

    fn release(&mut self, actor: H) {
        match self.waiting.pop_front() {
            Some(call) => {
                let r = call(&actor);
                self.in_flight.push_back((r, actor));
            }
            None => self.idle.push_back(actor),
        }
    }

    /// The result of the oldest outstanding submission.
    pub fn get_next(&mut self) -> Result<R, RayError> {
        let (r, actor) = self
            .in_flight
            .pop_front()
            .ok_or_else(|| RayError::InvalidArgument("the pool has no outstanding work".into()))?;
        let value = r.get();
        self.release(actor);
        value
    }

    /// Whichever outstanding result finishes first.
    pub fn get_next_unordered(&mut self) -> Result<R, RayError> {
        if self.in_flight.is_empty() {
            return Err(RayError::InvalidArgument("the pool has no outstanding work".into()));
        }
        let refs: Vec<ObjectRef<R>> = self.in_flight.iter().map(|(r, _)| r.clone()).collect();
        let (ready, _) = crate::wait(&refs, 1, None)?;
        let done = ready.first().map(|r| r.id()).ok_or_else(|| RayError::Internal("wait returned nothing".into()))?;
        let pos = self.in_flight.iter().position(|(r, _)| r.id() == done).expect("the ready ref is in flight");
        let (r, actor) = self.in_flight.remove(pos).expect("position is valid");
        let value = r.get();
        self.release(actor);
        value
    }

    /// Runs `f` over every value and returns the results in order.
    pub fn map<V: 'static>(
        &mut self,
        f: impl Fn(&H, V) -> ObjectRef<R> + Clone + 'static,
        values: impl IntoIterator<Item = V>,
    ) -> Result<Vec<R>, RayError> {
        let mut n = 0;
        for v in values {
            self.submit(f.clone(), v);
            n += 1;
        }
        (0..n).map(|_| self.get_next()).collect()
    }

    /// Adds an actor to the pool.
    pub fn push(&mut self, actor: H) {
        self.release(actor);
    }

    /// Takes an idle actor out of the pool.
    pub fn pop_idle(&mut self) -> Option<H> {
        self.idle.pop_front()
    }
}
