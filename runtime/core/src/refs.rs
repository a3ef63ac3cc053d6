//! The reference table: which objects this process owns or borrows, who else holds
//! them, and their values.
//!
//! Ray's ownership model lives here. The process that created an object (by `put`
//! or by submitting the task that returns it) owns it: it keeps the value (small
//! ones inline, large ones as a location in a node's shared memory) and counts every
//! reference: local `ObjectRef` handles, pending tasks that take it as an argument,
//! and borrowers (other processes still holding it). When all counts reach zero the
//! object is freed. A process that holds someone else's ref keeps a borrowed entry
//! and tells the owner when it lets go.
//!
//! Methods never do I/O: they return [`Effects`] that the caller carries out after
//! releasing the lock, so no lock is held across an `.await`.

use bytes::Bytes;
use ray_abi::{ObjectId, RayError};
use std::collections::{HashMap, HashSet};

/// Where an object's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Small objects, held in this process.
    Inline(Bytes),
    /// Large objects, in a node's shared-memory store.
    Shm {
        /// The node's arena, or the object's own file.
        path: String,
        /// Its range of the arena, when it is there.
        span: Option<ray_object_store::Span>,
        /// Its size.
        size: u64,
        /// The node holding it.
        node_id: Bytes,
        /// That node's address.
        node_address: String,
    },
}

/// An object's state as this process knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not yet created (task running) or not yet fetched (borrowed).
    Pending,
    /// Available.
    Ready(Value),
    /// Its task failed; `get` returns this error.
    Failed(RayError),
}

/// Something to run once an object is ready or failed.
pub type Waiter = Box<dyn FnOnce() + Send>;

/// One object in the table.
pub struct Entry {
    /// `None` if this process owns the object, else the owner's address.
    pub owner: Option<String>,
    /// Live `ObjectRef` handles (and objects that contain this one) here.
    pub local: u32,
    /// Pending tasks submitted from here that take this object as an argument.
    pub submitted: u32,
    /// Processes holding the object (owned objects only).
    pub borrowers: HashSet<String>,
    /// The value.
    pub state: State,
    /// Callbacks waiting for the value.
    pub waiters: Vec<Waiter>,
    /// Refs nested in this object's value; they live as long as it does.
    pub contained: Vec<ObjectId>,
    /// Borrowed objects: whether the owner counts us as a borrower.
    pub registered_borrower: bool,
    /// Borrowed objects: whether a fetch from the owner is under way.
    pub fetching: bool,
    /// Owned objects in shared memory: nodes that made a copy, freed with it.
    pub copies: Vec<String>,
}

impl Entry {
    fn new(owner: Option<String>, state: State) -> Self {
        Entry {
            owner,
            local: 0,
            submitted: 0,
            borrowers: HashSet::new(),
            state,
            waiters: Vec::new(),
            contained: Vec::new(),
            registered_borrower: false,
            fetching: false,
            copies: Vec::new(),
        }
    }

    fn is_settled(&self) -> bool {
        !matches!(self.state, State::Pending)
    }
}

/// Work to do after a table operation, outside the table's lock.
#[derive(Default)]
pub struct Effects {
    /// Owned objects in shared memory to free: (id, node address).
    pub free_shm: Vec<(ObjectId, String)>,
    /// Borrowed objects we no longer hold: (owner address, id).
    pub remove_borrower: Vec<(String, ObjectId)>,
    /// Callbacks to run.
    pub fire: Vec<Waiter>,
    /// Objects that were freed (for tests and stats).
    pub freed: Vec<ObjectId>,
}

impl Effects {
    /// Runs the callbacks; returns the I/O part.
    pub fn run_callbacks(&mut self) {
        for w in self.fire.drain(..) {
            w();
        }
    }
}

/// All objects this process owns or borrows.
#[derive(Default)]
pub struct RefTable {
    entries: HashMap<ObjectId, Entry>,
    /// Channels told of every object that settles, by listener id: `wait` on many
    /// objects listens here instead of leaving a callback on each of them.
    settle_listeners: Vec<(u64, std::sync::mpsc::Sender<ObjectId>)>,
    next_listener: u64,
}

impl RefTable {
    /// The entry of an object.
    pub fn get(&self, id: &ObjectId) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// The entry of an object, mutably.
    pub fn get_mut(&mut self, id: &ObjectId) -> Option<&mut Entry> {
        self.entries.get_mut(id)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Objects this process owns: each is still held somewhere, or it would be gone.
    pub fn owned_count(&self) -> usize {
        self.entries.values().filter(|e| e.owner.is_none()).count()
    }

    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectId, &Entry)> {
        self.entries.iter()
    }

    /// Records a new object this process owns, with one local handle.
    pub fn add_owned(&mut self, id: ObjectId, state: State, contained: Vec<ObjectId>) {
        for c in &contained {
            self.add_local(c);
        }
        let mut e = Entry::new(None, state);
        e.local = 1;
        e.contained = contained;
        self.entries.insert(id, e);
    }

    /// One more local handle. Returns false for unknown objects.
    pub fn add_local(&mut self, id: &ObjectId) -> bool {
        match self.entries.get_mut(id) {
            Some(e) => {
                e.local += 1;
                true
            }
            None => false,
        }
    }

    /// A deserialized ref: counts as one local handle. `owner` is the owner's
    /// address, `me` ours. `pre_registered`: the owner already counts us.
    pub fn adopt(&mut self, id: ObjectId, owner: &str, me: &str, pre_registered: bool) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.local += 1;
            if pre_registered && e.owner.is_some() {
                e.registered_borrower = true;
            }
            return;
        }
        let owner = if owner == me { None } else { Some(owner.to_string()) };
        let mut e = Entry::new(owner, State::Pending);
        e.local = 1;
        e.registered_borrower = pre_registered;
        self.entries.insert(id, e);
    }

    /// One local handle fewer.
    pub fn remove_local(&mut self, id: &ObjectId, fx: &mut Effects) {
        if let Some(e) = self.entries.get_mut(id) {
            e.local = e.local.saturating_sub(1);
            self.maybe_free(id, fx);
        }
    }

    /// A submitted task takes the object as an argument.
    pub fn add_submitted(&mut self, id: &ObjectId) {
        if let Some(e) = self.entries.get_mut(id) {
            e.submitted += 1;
        }
    }

    /// A task that took the object as an argument finished.
    pub fn remove_submitted(&mut self, id: &ObjectId, fx: &mut Effects) {
        if let Some(e) = self.entries.get_mut(id) {
            e.submitted = e.submitted.saturating_sub(1);
            self.maybe_free(id, fx);
        }
    }

    /// Another process holds an object we own.
    pub fn add_borrower(&mut self, id: &ObjectId, borrower: &str) -> bool {
        match self.entries.get_mut(id) {
            Some(e) if e.owner.is_none() => {
                e.borrowers.insert(borrower.to_string());
                true
            }
            _ => false,
        }
    }

    /// Another process let go of an object we own.
    pub fn remove_borrower(&mut self, id: &ObjectId, borrower: &str, fx: &mut Effects) {
        if let Some(e) = self.entries.get_mut(id) {
            e.borrowers.remove(borrower);
            self.maybe_free(id, fx);
        }
    }

    /// The object is ready or failed; wakes its waiters.
    pub fn settle(&mut self, id: &ObjectId, state: State, fx: &mut Effects) {
        if let Some(e) = self.entries.get_mut(id) {
            e.state = state;
            e.fetching = false;
            fx.fire.append(&mut e.waiters);
            for (_, listener) in &self.settle_listeners {
                // A `wait` that returned early may not have stopped listening yet.
                let _ = listener.send(*id);
            }
            self.maybe_free(id, fx);
        }
    }

    /// Records that the node at `node` holds a copy of an owned object; false if
    /// the object is no longer held (the node should drop its copy).
    pub fn add_copy(&mut self, id: &ObjectId, node: String) -> bool {
        match self.entries.get_mut(id) {
            Some(e) if e.owner.is_none() => {
                if !e.copies.contains(&node) {
                    e.copies.push(node);
                }
                true
            }
            _ => false,
        }
    }

    /// Sends the id of every object that settles from now on to `tx`, until
    /// [`RefTable::stop_listening`] with the returned id.
    pub fn listen_settled(&mut self, tx: std::sync::mpsc::Sender<ObjectId>) -> u64 {
        self.next_listener += 1;
        self.settle_listeners.push((self.next_listener, tx));
        self.next_listener
    }

    /// Ends a [`RefTable::listen_settled`].
    pub fn stop_listening(&mut self, listener: u64) {
        self.settle_listeners.retain(|(id, _)| *id != listener);
    }

    /// Runs `w` once the object settles; returns it back if it already has (or the
    /// object is unknown), so the caller runs it.
    pub fn on_settled(&mut self, id: &ObjectId, w: Waiter) -> Option<Waiter> {
        match self.entries.get_mut(id) {
            Some(e) if !e.is_settled() => {
                e.waiters.push(w);
                None
            }
            _ => Some(w),
        }
    }

    fn maybe_free(&mut self, id: &ObjectId, fx: &mut Effects) {
        let Some(e) = self.entries.get(id) else {
            return;
        };
        if e.local > 0 || e.submitted > 0 || !e.borrowers.is_empty() {
            return;
        }
        // An owned object whose task is still running is freed when it finishes.
        if e.owner.is_none() && !e.is_settled() {
            return;
        }
        let e = self.entries.remove(id).expect("entry exists");
        fx.freed.push(*id);
        fx.fire.extend(e.waiters);
        match (&e.owner, &e.state) {
            (None, State::Ready(Value::Shm { node_address, .. })) => {
                fx.free_shm.push((*id, node_address.clone()));
                fx.free_shm.extend(e.copies.iter().map(|node| (*id, node.clone())));
            }
            (Some(owner), _) if e.registered_borrower => fx.remove_borrower.push((owner.clone(), *id)),
            _ => {}
        }
        for c in e.contained {
            self.remove_local(&c, fx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 20])
    }

    fn shm() -> State {
        State::Ready(Value::Shm {
            path: "p".into(),
            span: None,
            size: 1,
            node_id: Bytes::new(),
            node_address: "node".into(),
        })
    }

    #[test]
    fn owned_objects_are_freed_when_the_last_reference_goes() {
        let mut t = RefTable::default();
        let mut fx = Effects::default();
        t.add_owned(id(1), shm(), vec![]);
        t.add_local(&id(1));
        t.add_submitted(&id(1));
        t.add_borrower(&id(1), "w1");
        t.remove_local(&id(1), &mut fx);
        t.remove_local(&id(1), &mut fx);
        t.remove_submitted(&id(1), &mut fx);
        assert!(fx.freed.is_empty());
        t.remove_borrower(&id(1), "w1", &mut fx);
        assert_eq!(fx.freed, vec![id(1)]);
        assert_eq!(fx.free_shm.len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_running_task_result_is_freed_when_it_arrives() {
        let mut t = RefTable::default();
        let mut fx = Effects::default();
        t.add_owned(id(1), State::Pending, vec![]);
        t.remove_local(&id(1), &mut fx);
        assert!(fx.freed.is_empty());
        t.settle(&id(1), shm(), &mut fx);
        assert_eq!(fx.freed, vec![id(1)]);
    }

    #[test]
    fn contained_refs_live_as_long_as_their_container() {
        let mut t = RefTable::default();
        let mut fx = Effects::default();
        t.add_owned(id(1), State::Ready(Value::Inline(Bytes::from_static(b"x"))), vec![]);
        t.add_owned(id(2), State::Ready(Value::Inline(Bytes::from_static(b"y"))), vec![id(1)]);
        t.remove_local(&id(1), &mut fx);
        assert!(fx.freed.is_empty(), "still inside object 2");
        t.remove_local(&id(2), &mut fx);
        assert_eq!(fx.freed, vec![id(2), id(1)]);
    }

    #[test]
    fn borrowed_refs_tell_the_owner_when_released() {
        let mut t = RefTable::default();
        let mut fx = Effects::default();
        t.adopt(id(1), "owner", "me", false);
        t.get_mut(&id(1)).unwrap().registered_borrower = true;
        t.remove_local(&id(1), &mut fx);
        assert_eq!(fx.remove_borrower, vec![("owner".to_string(), id(1))]);
    }

    #[test]
    fn waiters_fire_once_on_settle() {
        let mut t = RefTable::default();
        let mut fx = Effects::default();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        t.add_owned(id(1), State::Pending, vec![]);
        let h = hits.clone();
        assert!(
            t.on_settled(
                &id(1),
                Box::new(move || {
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                })
            )
            .is_none()
        );
        t.settle(&id(1), State::Failed(RayError::Internal("x".into())), &mut fx);
        fx.run_callbacks();
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(t.on_settled(&id(1), Box::new(|| {})).is_some(), "settled objects run the waiter now");
    }

    proptest! {
        /// However references come and go, an object is freed exactly once, and only
        /// when nothing references it.
        #[test]
        fn freed_exactly_when_unreferenced(ops in proptest::collection::vec(0u8..6, 0..80)) {
            let mut t = RefTable::default();
            let mut fx = Effects::default();
            t.add_owned(id(1), shm(), vec![]);
            let (mut local, mut submitted, mut borrowers) = (1i32, 0i32, 0i32);
            for op in ops {
                if !fx.freed.is_empty() { break; }
                match op {
                    0 => { t.add_local(&id(1)); local += 1; }
                    1 if local > 0 => { t.remove_local(&id(1), &mut fx); local -= 1; }
                    2 => { t.add_submitted(&id(1)); submitted += 1; }
                    3 if submitted > 0 => { t.remove_submitted(&id(1), &mut fx); submitted -= 1; }
                    4 => { t.add_borrower(&id(1), &format!("b{borrowers}")); borrowers += 1; }
                    5 if borrowers > 0 => { borrowers -= 1; t.remove_borrower(&id(1), &format!("b{borrowers}"), &mut fx); }
                    _ => {}
                }
                let unreferenced = local == 0 && submitted == 0 && borrowers == 0;
                prop_assert_eq!(!fx.freed.is_empty(), unreferenced);
            }
            prop_assert!(fx.freed.len() <= 1);
        }
    }
}
