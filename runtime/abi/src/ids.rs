//! Identifiers for jobs, tasks, actors and objects.
//!
//! An object id embeds the id of the task that created it, as in Ray, so an owner can
//! find the lineage of any object it owns from the id alone.

use crate::RayError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Lowercase hex of `bytes`: how ids, tokens and digests are printed.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string, as [`hex`] writes it.
pub fn unhex(s: &str) -> Result<Vec<u8>, RayError> {
    let malformed = || RayError::InvalidArgument(format!("malformed hex {s:?}: expected pairs of hex digits"));
    if !s.len().is_multiple_of(2) {
        return Err(malformed());
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok()).ok_or_else(malformed))
        .collect()
}

/// Exactly `N` bytes of a `what` id, or an error that says what was malformed.
fn id_bytes<const N: usize>(what: &str, b: &[u8]) -> Result<[u8; N], RayError> {
    b.try_into()
        .map_err(|_| RayError::InvalidArgument(format!("malformed {what} id: expected {N} bytes, got {}", b.len())))
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// A job: one driver's session with the cluster.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[repr(C)]
pub struct JobId(pub u32);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0.to_be_bytes())
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

/// A task: 4 bytes of job id followed by 12 bytes unique within the cluster.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[repr(C)]
pub struct TaskId(pub [u8; 16]);

static TASK_COUNTER: AtomicU64 = AtomicU64::new(1);

impl TaskId {
    /// A fresh task id. `process_salt` must differ between processes of one job
    /// (the runtime uses its worker id), so ids never collide.
    pub fn generate(job: JobId, process_salt: u32) -> Self {
        let n = TASK_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&n.to_be_bytes());
        b[8..12].copy_from_slice(&process_salt.to_be_bytes());
        b[12..].copy_from_slice(&job.0.to_be_bytes());
        TaskId(b)
    }

    /// The job this task belongs to.
    pub fn job(&self) -> JobId {
        JobId(u32::from_be_bytes([self.0[12], self.0[13], self.0[14], self.0[15]]))
    }

    /// Parses the hex form printed by `Display`.
    pub fn from_hex(s: &str) -> Option<Self> {
        parse_hex(s).map(TaskId)
    }

    /// The id in `b`, which must be exactly 16 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, RayError> {
        id_bytes("task", b).map(TaskId)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}

/// An actor.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[repr(C)]
pub struct ActorId(pub [u8; 16]);

impl ActorId {
    /// The id in `b`, which must be exactly 16 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, RayError> {
        id_bytes("actor", b).map(ActorId)
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({self})")
    }
}

/// A placement group: 14 bytes unique within the cluster followed by 4 bytes of
/// the creating job's id, Ray's layout (its hex form is 36 characters, as in
/// Ray's `CPU_group_<id>` resource names).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[repr(C)]
pub struct PlacementGroupId(pub [u8; 18]);

impl PlacementGroupId {
    /// The id of a group `job` creates; `unique` must be random.
    pub fn new(unique: [u8; 14], job: JobId) -> Self {
        let mut b = [0u8; 18];
        b[..14].copy_from_slice(&unique);
        b[14..].copy_from_slice(&job.0.to_be_bytes());
        PlacementGroupId(b)
    }

    /// The job that created the group.
    pub fn job(&self) -> JobId {
        JobId(u32::from_be_bytes([self.0[14], self.0[15], self.0[16], self.0[17]]))
    }

    /// Parses the hex form printed by `Display`.
    pub fn from_hex(s: &str) -> Option<Self> {
        parse_hex(s).map(PlacementGroupId)
    }

    /// The id in `b`, which must be exactly 18 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, RayError> {
        id_bytes("placement group", b).map(PlacementGroupId)
    }
}

impl fmt::Display for PlacementGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for PlacementGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlacementGroupId({self})")
    }
}

/// An object: the id of the task that created it and an index.
///
/// Return values use indexes from 1; objects created by `put` inside a task use
/// indexes with the top bit set, so the two never collide.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[repr(C)]
pub struct ObjectId(pub [u8; 20]);

/// The top bit of an object index marks an object created by `put`.
pub const PUT_INDEX_FLAG: u32 = 1 << 31;

impl ObjectId {
    /// The object for return value `index` (from 1) of `task`, or a put when
    /// `index` has [`PUT_INDEX_FLAG`] set.
    pub fn new(task: TaskId, index: u32) -> Self {
        let mut b = [0u8; 20];
        b[..16].copy_from_slice(&task.0);
        b[16..].copy_from_slice(&index.to_be_bytes());
        ObjectId(b)
    }

    /// The task that created this object.
    pub fn task(&self) -> TaskId {
        let mut t = [0u8; 16];
        t.copy_from_slice(&self.0[..16]);
        TaskId(t)
    }

    /// The index within the creating task.
    pub fn index(&self) -> u32 {
        u32::from_be_bytes([self.0[16], self.0[17], self.0[18], self.0[19]])
    }

    /// Whether this object was created by `put`.
    pub fn is_put(&self) -> bool {
        self.index() & PUT_INDEX_FLAG != 0
    }

    /// Parses the hex form printed by `Display`.
    pub fn from_hex(s: &str) -> Option<Self> {
        parse_hex(s).map(ObjectId)
    }

    /// Builds an id from raw bytes, if there are exactly 20 of them.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(ObjectId)
    }

    /// The id in `b`, which must be exactly 20 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, RayError> {
        id_bytes("object", b).map(ObjectId)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_round_trips_task_and_index() {
        let t = TaskId::generate(JobId(7), 42);
        let o = ObjectId::new(t, 3);
        assert_eq!(o.task(), t);
        assert_eq!(o.index(), 3);
        assert!(!o.is_put());
        assert_eq!(t.job(), JobId(7));
        assert!(ObjectId::new(t, PUT_INDEX_FLAG | 1).is_put());
        assert_eq!(ObjectId::from_hex(&o.to_string()), Some(o));
    }

    #[test]
    fn ids_parse_from_exact_bytes_only() {
        let t = TaskId::generate(JobId(3), 9);
        assert_eq!(TaskId::from_bytes(&t.0), Ok(t));
        let o = ObjectId::new(t, 1);
        assert_eq!(ObjectId::from_bytes(&o.0), Ok(o));
        assert_eq!(ActorId::from_bytes(&[5; 16]), Ok(ActorId([5; 16])));
        assert_eq!(
            TaskId::from_bytes(&[1, 2, 3]),
            Err(RayError::InvalidArgument("malformed task id: expected 16 bytes, got 3".into()))
        );
        assert!(matches!(ActorId::from_bytes(&[]), Err(RayError::InvalidArgument(m)) if m.contains("actor id")));
        assert!(matches!(ObjectId::from_bytes(&[0; 16]), Err(RayError::InvalidArgument(m)) if m.contains("got 16")));
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(unhex("00ab7f"), Ok(vec![0x00, 0xab, 0x7f]));
        assert_eq!(unhex(""), Ok(vec![]));
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
        assert!(unhex("é1").is_err());
    }

    #[test]
    fn placement_group_ids_carry_their_job_and_print_as_rays_do() {
        let pg = PlacementGroupId::new([0xab; 14], JobId(5));
        assert_eq!(pg.job(), JobId(5));
        assert_eq!(pg.to_string().len(), 36);
        assert_eq!(PlacementGroupId::from_hex(&pg.to_string()), Some(pg));
        assert_eq!(PlacementGroupId::from_bytes(&pg.0), Ok(pg));
        assert!(PlacementGroupId::from_bytes(&pg.0[..16]).is_err());
    }

    #[test]
    fn task_ids_are_unique() {
        let a = TaskId::generate(JobId(1), 1);
        let b = TaskId::generate(JobId(1), 1);
        assert_ne!(a, b);
    }
}
