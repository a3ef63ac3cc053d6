//! Getting an object back after the node holding it is gone.
//!
//! A large object lives in one node's shared memory, plus any copies readers made
//! on theirs. When a reader cannot copy it from that node, the owner recovers it
//! as Ray does: from another copy if one exists; else by running the task that
//! made it again (its *lineage*, kept while retries are left); else the object is
//! lost, and every reader gets a typed `ObjectLost` error. A borrower hands the
//! failure to the owner and fetches the object's new location. A task whose
//! worker could not read such an argument runs again once it is recovered.

use crate::refs::{Effects, State, Value};
use crate::{CoreWorker, lock};
use ray_abi::{ArgSubmission, ObjectId, RayError};

impl CoreWorker {
    /// A reader could not copy `id` from the node at `from`. Ok means the object
    /// can be read again once it settles (from a copy, or rebuilt); otherwise it
    /// is lost, with `why`.
    pub(crate) fn object_lost(&self, id: &ObjectId, from: &str, why: &RayError) -> Result<(), RayError> {
        let lost = |detail: String| RayError::ObjectLost { object: id.to_string(), detail };
        let mut refs = lock(&self.0.refs);
        let Some(entry) = refs.get_mut(id) else {
            return Err(lost("no reference to it is held here".into()));
        };
        if entry.owner.is_some() {
            // A borrower: the owner decides, and the fetch brings the outcome.
            entry.state = State::Pending;
            drop(refs);
            self.fetch_borrowed(id, Some(from.to_string()));
            return Ok(());
        }
        entry.copies.retain(|c| c != from);
        let size = match &entry.state {
            State::Ready(Value::Shm { node_address, size, .. }) if node_address == from => *size,
            // Another reader already moved it on.
            _ => return Ok(()),
        };
        if !entry.copies.is_empty() {
            let copy = entry.copies.remove(0);
            tracing::info!("object {id}: node {from} is gone; reading the copy on {copy}");
            // The copy's file is known only to its node; a pull there finds it by id.
            entry.state = State::Ready(Value::Shm {
                path: String::new(),
                span: None,
                size,
                node_id: Default::default(),
                node_address: copy,
            });
            return Ok(());
        }
        let Some(mut task) = lock(&self.0.sched).lineage.remove(id) else {
            let rebuild = if id.is_put() {
                "it was made by `put`, so no task can rebuild it"
            } else {
                "the task that made it has no retries left to rebuild it (raise max_retries)"
            };
            let err = lost(format!("its only copy was on node {from}, which cannot be reached ({why}), and {rebuild}"));
            entry.state = State::Failed(err.clone());
            return Err(err);
        };
        entry.state = State::Pending;
        drop(refs);
        tracing::info!("object {id}: node {from} is gone; running `{}` again to rebuild it", task.name);
        task.attempt += 1;
        task.spec = None;
        task.running = None;
        let top_level = task
            .args
            .iter()
            .filter_map(|a| match a {
                ArgSubmission::Ref(r) => Some(*r),
                ArgSubmission::Value { .. } => None,
            })
            .collect();
        self.enqueue(task, top_level);
        Ok(())
    }

    /// Drops the lineage of freed objects, releasing the inputs it pinned (which
    /// may free more).
    pub(crate) fn release_lineage(&self, fx: &mut Effects) {
        let mut next = 0;
        while next < fx.freed.len() {
            let id = fx.freed[next];
            next += 1;
            if id.is_put() {
                continue;
            }
            let Some(task) = lock(&self.0.sched).lineage.remove(&id) else { continue };
            let mut refs = lock(&self.0.refs);
            for d in &task.deps {
                refs.remove_submitted(d, fx);
            }
        }
    }
}
