//! A node's shared-memory object store.
//!
//! Large objects must be shared by every process on a node without copies, and must
//! give their memory back when nobody references them. The objects a node's
//! processes create live in one arena file on tmpfs (`/dev/shm`) that each process
//! maps once ([`arena`]): the creator writes an object in place, readers on the
//! node pin and read it where it is, and a freed range is reused once its readers
//! are done. An object that does not fit the arena, and every copy pulled from
//! another node, is a file of its own, which freeing unlinks. The node daemon keeps
//! the accounting ([`StoreIndex`]): capacity, which objects exist and where, and
//! whether each is sealed (immutable and readable).
//!
//! An object read on another node is copied there ([`ObjectWriter`] takes it in
//! chunks as they arrive). Such a secondary copy is a cache: the store evicts copies,
//! least recently used first, when it needs room, while primaries stay until their
//! owner frees them.

pub mod arena;
pub mod sizing;

use arena::{Arena, PinnedSpan};
pub use arena::{ArenaMap, Span};
use memmap2::{Mmap, MmapMut, MmapOptions};
use ray_abi::{ObjectId, RayError};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Errors of the shared-memory store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not fit in the remaining capacity.
    #[error("object store full: {requested} bytes requested, {used} of {capacity} in use")]
    Full {
        /// Object size.
        requested: u64,
        /// Bytes in use.
        used: u64,
        /// Capacity.
        capacity: u64,
    },
    /// The object already exists.
    #[error("object {0} already exists in the store")]
    Exists(ObjectId),
    /// The object is not in the store.
    #[error("object {0} is not in the store")]
    Missing(ObjectId),
    /// The filesystem the store lives on has too little free space for it.
    #[error(
        "the object store needs {} but {} has only {} free; start the node with a smaller \
         --object-store-memory, put the store on a larger filesystem with --plasma-directory, \
         or give {} more room (for Docker, `--shm-size`)",
        mib(*wanted), dir.display(), mib(*free), dir.display()
    )]
    NoRoom {
        /// Where the store would live.
        dir: PathBuf,
        /// The size it needs.
        wanted: u64,
        /// The free space there.
        free: u64,
    },
    /// A file operation failed.
    #[error("object store I/O on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl From<StoreError> for RayError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full { requested, used, capacity } => RayError::ObjectStoreFull { requested, used, capacity },
            StoreError::Missing(id) => {
                RayError::ObjectLost { object: id.to_string(), detail: "not in the node's object store".into() }
            }
            other => RayError::Internal(other.to_string()),
        }
    }
}

/// `n` bytes in MiB, for messages.
fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// The directory node stores live in: `plasma_directory` (Ray's
/// `--plasma-directory`) if given, else tmpfs when the machine has it.
pub fn store_base(plasma_directory: Option<&Path>) -> PathBuf {
    if let Some(dir) = plasma_directory {
        return dir.to_path_buf();
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}

/// Where a node of `session` keeps its objects, in `base` (see [`store_base`]).
pub fn store_root(base: &Path, session: &str, node: &str) -> PathBuf {
    base.join(format!("rayrepl-{session}-{node}"))
}

/// The file in a store's directory naming the process that keeps it.
const KEEPER_FILE: &str = ".keeper";

/// This process, as `pid start-time` (the start time tells a reused pid apart).
fn process_identity(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let start = after_name.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Removes the stores of node daemons that died without cleaning up (killed with
/// SIGKILL, say): their objects would otherwise hold tmpfs memory until reboot.
/// Keepers are checked by pid, so nodes sharing `/dev/shm` must share a pid
/// namespace (true on one machine, and for network namespaces). A store whose
/// keeper cannot be read as `pid start-time` is left alone. Returns how many
/// were removed.
pub fn remove_stale_stores(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else { return 0 };
    let mut removed = 0;
    for dir in entries.flatten().map(|e| e.path()) {
        let is_store = dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("rayrepl-"));
        let Some(keeper) = is_store.then(|| std::fs::read_to_string(dir.join(KEEPER_FILE)).ok()).flatten() else {
            continue;
        };
        let mut fields = keeper.split_whitespace();
        let (Some(pid), Some(start)) = (fields.next(), fields.next()) else { continue };
        if pid.parse::<u32>().is_err() || start.parse::<u64>().is_err() {
            continue;
        }
        if process_identity(pid).as_deref() != Some(keeper.trim()) && std::fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// One object's bookkeeping.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// The object.
    pub id: ObjectId,
    /// Its size in bytes.
    pub size: u64,
    /// Its owner's address.
    pub owner: String,
    /// Whether it is complete and readable.
    pub sealed: bool,
    /// Whether this is the object's first copy, made by its creator, rather than a
    /// secondary copy pulled from another node (which may be evicted).
    pub primary: bool,
    /// When it was last created or read, for eviction order.
    pub last_used: Instant,
    /// Its range in the arena; `None` for an object in a file of its own.
    pub span: Option<Span>,
}

/// Where an object's bytes are on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The arena file, or the object's own file.
    pub path: PathBuf,
    /// The object's range in the arena, when it is there.
    pub span: Option<Span>,
}

/// The node daemon's view of its store: capacity accounting and the object table.
#[derive(Debug)]
pub struct StoreIndex {
    root: PathBuf,
    capacity: u64,
    used: u64,
    objects: HashMap<ObjectId, StoredObject>,
    arena: Option<Arena>,
}

impl StoreIndex {
    /// A store under `root` holding at most `capacity` bytes. Creates `root`.
    pub fn new(root: PathBuf, capacity: u64) -> Result<Self, StoreError> {
        {
            use std::os::unix::fs::DirBuilderExt;
            // Private: its objects are the cluster's data.
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&root).map_err(io_err(&root))?;
        }
        // Names this process as the store's keeper, for `remove_stale_stores`. The
        // file appears whole (write, then rename): a sweep that read it half
        // written would take a live store for a dead one.
        if let Some(me) = process_identity(&std::process::id().to_string()) {
            let staged = root.join(format!("{KEEPER_FILE}.new"));
            std::fs::write(&staged, me).map_err(io_err(&staged))?;
            let keeper = root.join(KEEPER_FILE);
            std::fs::rename(&staged, &keeper).map_err(io_err(&keeper))?;
        }
        let arena = Arena::create(&root, capacity)
            .inspect_err(|e| tracing::warn!("no object arena, objects get files of their own: {e}"))
            .ok();
        Ok(StoreIndex { root, capacity, used: 0, objects: HashMap::new(), arena })
    }

    /// This process's mapping of the arena, for reading the objects in it.
    pub fn arena_map(&self) -> Option<&Arc<ArenaMap>> {
        self.arena.as_ref().map(Arena::map)
    }

    /// Frees the arena ranges whose readers finished since their objects went,
    /// and gives the arena's memory back once it has held nothing for `idle`.
    pub fn tidy_arena(&mut self, idle: std::time::Duration) {
        if let Some(arena) = self.arena.as_mut() {
            arena.retry_pending();
            if arena.trim_if_idle(idle) {
                tracing::debug!("gave the memory of the idle object arena back");
            }
        }
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of an object.
    pub fn path_of(&self, id: &ObjectId) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes reserved by objects.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Objects in the store.
    pub fn objects(&self) -> impl Iterator<Item = &StoredObject> {
        self.objects.values()
    }

    /// Reserves space for a new object and returns where the creator must write it:
    /// a span of the arena, or else a file to create.
    pub fn reserve(&mut self, id: ObjectId, size: u64, owner: &str) -> Result<Location, StoreError> {
        self.reserve_as(id, size, owner, true)?;
        let span = self.arena.as_mut().and_then(|a| a.allocate(size));
        if let (Some(span), Some(arena)) = (span, self.arena.as_mut())
            && let Err(e) = arena.back(&span)
        {
            arena.release(span);
            self.used -= size;
            self.objects.remove(&id);
            return Err(self.cannot_back(size, e));
        }
        if let Some(o) = self.objects.get_mut(&id) {
            o.span = span;
        }
        Ok(self.location_of(&id, span))
    }

    /// Reserves space for a secondary copy of an object pulled from another node,
    /// and returns the file to create. Copies stay out of the arena: evicting one
    /// then cannot pull a range from under a reader.
    pub fn reserve_copy(&mut self, id: ObjectId, size: u64, owner: &str) -> Result<PathBuf, StoreError> {
        self.reserve_as(id, size, owner, false)?;
        Ok(self.path_of(&id))
    }

    fn location_of(&self, id: &ObjectId, span: Option<Span>) -> Location {
        match (span, self.arena.as_ref()) {
            (Some(span), Some(arena)) => Location { path: arena.map().path().to_path_buf(), span: Some(span) },
            _ => Location { path: self.path_of(id), span: None },
        }
    }

    fn reserve_as(&mut self, id: ObjectId, size: u64, owner: &str, primary: bool) -> Result<(), StoreError> {
        if self.objects.contains_key(&id) {
            return Err(StoreError::Exists(id));
        }
        if self.used.saturating_add(size) > self.capacity {
            self.evict_copies(self.used.saturating_add(size) - self.capacity);
        }
        if self.used.saturating_add(size) > self.capacity {
            return Err(StoreError::Full { requested: size, used: self.used, capacity: self.capacity });
        }
        self.used += size;
        let object = StoredObject {
            id,
            size,
            owner: owner.to_string(),
            sealed: false,
            primary,
            last_used: Instant::now(),
            span: None,
        };
        self.objects.insert(id, object);
        Ok(())
    }

    /// The error for an object whose memory the filesystem could not give: the
    /// store is full as far as the caller can tell, whatever its own count says.
    fn cannot_back(&self, size: u64, e: io::Error) -> StoreError {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            tracing::warn!(
                "the filesystem of the object store ({}) is full, below the store's {} capacity: \
                 a {size}-byte object was refused. Free space there, or restart the node with a smaller \
                 --object-store-memory or a --plasma-directory on a larger filesystem",
                self.root.display(),
                mib(self.capacity)
            );
            StoreError::Full { requested: size, used: self.used, capacity: self.capacity }
        } else {
            StoreError::Io { path: self.root.clone(), source: e }
        }
    }

    /// Frees sealed secondary copies, least recently used first, until `needed`
    /// bytes are free or none is left. Readers that map a copy keep their pages.
    fn evict_copies(&mut self, needed: u64) {
        let mut copies: Vec<(Instant, ObjectId, u64)> =
            self.objects.values().filter(|o| !o.primary && o.sealed).map(|o| (o.last_used, o.id, o.size)).collect();
        copies.sort_unstable_by_key(|c| c.0);
        let mut freed = 0;
        for (_, id, size) in copies {
            if freed >= needed {
                break;
            }
            tracing::debug!("evicting the copy of {id} ({size} bytes) to make room");
            self.free(&id);
            freed += size;
        }
    }

    /// Where a sealed object is, marking it recently used.
    pub fn sealed_location(&mut self, id: &ObjectId) -> Option<Location> {
        let o = self.objects.get_mut(id).filter(|o| o.sealed)?;
        o.last_used = Instant::now();
        let span = o.span;
        Some(self.location_of(id, span))
    }

    /// Marks an object complete.
    pub fn seal(&mut self, id: &ObjectId) -> Result<(), StoreError> {
        let o = self.objects.get_mut(id).ok_or(StoreError::Missing(*id))?;
        o.sealed = true;
        o.last_used = Instant::now();
        Ok(())
    }

    /// Removes an object: its arena range is reused once no reader pins it; its
    /// own file is unlinked, and the memory returns once no process maps it any
    /// more. Unknown ids are ignored (frees may race with failures).
    pub fn free(&mut self, id: &ObjectId) {
        if let Some(o) = self.objects.remove(id) {
            self.used = self.used.saturating_sub(o.size);
            if let Some(span) = o.span {
                if let Some(arena) = self.arena.as_mut() {
                    arena.release(span);
                }
                return;
            }
            let path = self.path_of(id);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!("could not unlink {}: {e}", path.display());
            }
        }
    }

    /// Frees every object `owner` owned (its owner is gone, so nobody else will);
    /// returns how many.
    pub fn free_owned_by(&mut self, owner: &str) -> usize {
        let ids: Vec<ObjectId> = self.objects.values().filter(|o| o.owner == owner).map(|o| o.id).collect();
        for id in &ids {
            self.free(id);
        }
        ids.len()
    }

    /// Removes every object and the directory.
    pub fn destroy(&mut self) {
        self.objects.clear();
        self.used = 0;
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Writes a new object's bytes into its shared-memory file.
///
/// `parts` are concatenated; writing happens through a shared mapping so the pages
/// land in tmpfs directly, with one copy.
pub fn write_object(path: &Path, parts: &[&[u8]]) -> Result<(), StoreError> {
    let mut writer = ObjectWriter::create(path, parts.iter().map(|p| p.len() as u64).sum())?;
    for p in parts {
        writer.append(p)?;
    }
    writer.finish()
}

/// Writes a new object's bytes where the store reserved them. `arena` is this
/// process's map of the node's arena, needed when the location is a span of it.
pub fn write_at(location: &Location, arena: Option<&ArenaMap>, parts: &[&[u8]]) -> Result<(), StoreError> {
    let Some(span) = location.span else { return write_object(&location.path, parts) };
    let arena = arena.filter(|a| a.path() == location.path).ok_or_else(|| StoreError::Io {
        path: location.path.clone(),
        source: io::Error::new(io::ErrorKind::NotFound, "this process has not mapped the arena"),
    })?;
    let mut at = 0;
    for part in parts {
        arena.write(&span, at, part)?;
        at += part.len() as u64;
    }
    if at != span.len {
        return Err(StoreError::Io {
            path: location.path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, "the object ended early"),
        });
    }
    Ok(())
}

/// Fills a new object's file front to back, for bytes that arrive in pieces (an
/// object pulled from another node in chunks).
#[derive(Debug)]
pub struct ObjectWriter {
    path: PathBuf,
    map: Option<MmapMut>,
    written: usize,
}

impl ObjectWriter {
    /// Creates the file at `path` with room for exactly `size` bytes.
    pub fn create(path: &Path, size: u64) -> Result<Self, StoreError> {
        let file =
            OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path).map_err(io_err(path))?;
        // Backed now, not sparse: a page tmpfs could not back would be SIGBUS
        // when written through the map.
        if let Err(e) = arena::allocate_space(&file, 0, size) {
            let _ = std::fs::remove_file(path);
            return Err(StoreError::Io { path: path.to_path_buf(), source: e });
        }
        let map = if size == 0 {
            None
        } else {
            let len = usize::try_from(size).map_err(|_| StoreError::Io {
                path: path.to_path_buf(),
                source: io::Error::other("object larger than the address space"),
            })?;
            // SAFETY: the file was just created exclusively by this process
            // (create_new), so no one else maps or writes it until it is sealed; its
            // length is `len`.
            Some(unsafe { MmapOptions::new().len(len).populate().map_mut(&file) }.map_err(io_err(path))?)
        };
        Ok(ObjectWriter { path: path.to_path_buf(), map, written: 0 })
    }

    /// Writes the next `bytes`; fails if they would run past the object's size.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let end = self.written + bytes.len();
        match self.map.as_mut() {
            Some(map) if end <= map.len() => {
                map[self.written..end].copy_from_slice(bytes);
                self.written = end;
                Ok(())
            }
            _ => Err(self.short("more bytes than the object's size")),
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written as u64
    }

    /// Checks that every byte was written.
    pub fn finish(self) -> Result<(), StoreError> {
        if self.written == self.map.as_ref().map_or(0, |m| m.len()) {
            Ok(())
        } else {
            Err(self.short("the object ended early"))
        }
    }

    fn short(&self, what: &str) -> StoreError {
        StoreError::Io { path: self.path.clone(), source: io::Error::new(io::ErrorKind::InvalidData, what.to_string()) }
    }
}

/// A read-only view of a sealed object, shared with every other reader.
#[derive(Debug)]
pub struct ObjectView(View);

#[derive(Debug)]
enum View {
    Empty,
    File(Mmap),
    Arena(PinnedSpan),
}

impl ObjectView {
    /// Maps the sealed object in its own file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        if len == 0 {
            return Ok(ObjectView(View::Empty));
        }
        // SAFETY: sealed objects are immutable: the store never writes a file after
        // its creator sealed it, and freeing unlinks rather than truncates, so the
        // mapped bytes cannot change or vanish while this view lives.
        let map = unsafe { MmapOptions::new().map(&file) }.map_err(io_err(path))?;
        Ok(ObjectView(View::File(map)))
    }

    /// Pins the sealed object at `span` of an arena; `None` if it was freed.
    pub fn pinned(arena: &Arc<ArenaMap>, span: Span) -> Option<Self> {
        arena.pin(span).map(|p| ObjectView(View::Arena(p)))
    }

    /// The object's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.0 {
            View::Empty => &[],
            View::File(map) => map,
            View::Arena(pin) => pin.bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 20])
    }

    #[test]
    fn objects_are_written_read_and_freed() {
        let dir = std::env::temp_dir().join(format!("rayrepl-store-test-{}", std::process::id()));
        let mut store = StoreIndex::new(dir.clone(), 1 << 20).unwrap();
        let location = store.reserve(id(1), 11, "owner").unwrap();
        let span = location.span.expect("a new object goes in the arena");
        let arena = store.arena_map().unwrap().clone();
        assert!(write_at(&location, Some(&arena), &[b"hello ", b"wor"]).is_err(), "a short object was accepted");
        write_at(&location, Some(&arena), &[b"hello ", b"world"]).unwrap();
        store.seal(&id(1)).unwrap();
        assert_eq!(store.sealed_location(&id(1)), Some(location.clone()));
        let view = ObjectView::pinned(&arena, span).unwrap();
        assert_eq!(view.bytes(), b"hello world");
        assert_eq!(store.used(), 11);
        store.free(&id(1));
        assert_eq!(store.used(), 0);
        assert!(store.sealed_location(&id(1)).is_none());
        // The pinned view still reads the freed object, and nobody can pin it anew.
        assert_eq!(view.bytes(), b"hello world");
        assert!(ObjectView::pinned(&arena, span).is_none());
        drop(view);
        store.tidy_arena(std::time::Duration::from_secs(60));
        // The range is reused; the old span cannot reach the new object.
        let again = store.reserve(id(2), 11, "owner").unwrap().span.unwrap();
        assert_eq!(again.offset, span.offset);
        assert!(ObjectView::pinned(&arena, span).is_none());
        store.destroy();
        assert!(!dir.exists());
    }

    #[test]
    fn a_writer_takes_chunks_and_checks_the_size() {
        let dir = std::env::temp_dir().join(format!("rayrepl-store-writer-{}", std::process::id()));
        let mut store = StoreIndex::new(dir, 1 << 20).unwrap();
        let path = store.reserve_copy(id(1), 6, "o").unwrap();
        let mut w = ObjectWriter::create(&path, 6).unwrap();
        w.append(b"abc").unwrap();
        w.append(b"de").unwrap();
        assert_eq!(w.written(), 5);
        assert!(w.append(b"fg").is_err(), "ran past the end");
        w.append(b"f").unwrap();
        w.finish().unwrap();
        assert_eq!(ObjectView::open(&path).unwrap().bytes(), b"abcdef");
        let path = store.reserve_copy(id(2), 4, "o").unwrap();
        let mut w = ObjectWriter::create(&path, 4).unwrap();
        w.append(b"ab").unwrap();
        assert!(w.finish().is_err(), "a short object was accepted");
        store.destroy();
    }

    #[test]
    fn copies_are_evicted_least_recently_used_first_and_primaries_never() {
        let dir = std::env::temp_dir().join(format!("rayrepl-store-evict-{}", std::process::id()));
        let mut store = StoreIndex::new(dir, 100).unwrap();
        for (n, primary) in [(1, true), (2, false), (3, false)] {
            let location = if primary {
                store.reserve(id(n), 30, "o").unwrap()
            } else {
                Location { path: store.reserve_copy(id(n), 30, "o").unwrap(), span: None }
            };
            write_at(&location, store.arena_map().map(|a| &**a), &[&[n; 30]]).unwrap();
            store.seal(&id(n)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // Reading copy 2 makes copy 3 the least recently used.
        assert!(store.sealed_location(&id(2)).is_some());
        store.reserve(id(4), 30, "o").unwrap();
        let left: Vec<u8> = {
            let mut v: Vec<u8> = store.objects().map(|o| o.id.0[0]).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(left, vec![1, 2, 4]);
        // Only copies go: primaries 1 and 4 and copy 2 leave no room for 50 bytes.
        assert!(matches!(store.reserve(id(5), 50, "o"), Err(StoreError::Full { .. })));
        assert!(store.objects().all(|o| o.primary));
        store.destroy();
    }

    #[test]
    fn an_owner_s_objects_go_with_it() {
        let dir = std::env::temp_dir().join(format!("rayrepl-store-owner-{}", std::process::id()));
        let mut store = StoreIndex::new(dir, 100).unwrap();
        for (n, owner) in [(1, "a"), (2, "b"), (3, "a")] {
            let location = store.reserve(id(n), 10, owner).unwrap();
            write_at(&location, store.arena_map().map(|a| &**a), &[&[n; 10]]).unwrap();
        }
        assert_eq!(store.free_owned_by("a"), 2);
        assert_eq!(store.used(), 10);
        assert_eq!(store.objects().map(|o| o.owner.as_str()).collect::<Vec<_>>(), ["b"]);
        store.destroy();
    }

    #[test]
    fn stores_whose_keeper_died_are_removed_and_live_ones_kept() {
        let live = std::env::temp_dir().join(format!("rayrepl-store-live-{}", std::process::id()));
        let store = StoreIndex::new(live.clone(), 100).unwrap();
        let dead = store_base(None).join(format!("rayrepl-test-dead-{}", std::process::id()));
        std::fs::create_dir_all(&dead).unwrap();
        // A pid that cannot be running: above the kernel's maximum.
        std::fs::write(dead.join(KEEPER_FILE), "4194305 1").unwrap();
        std::fs::write(dead.join("object"), b"bytes").unwrap();
        let mine = store_base(None).join(format!("rayrepl-test-mine-{}", std::process::id()));
        let _mine = StoreIndex::new(mine.clone(), 100).unwrap();
        // A keeper caught while being written, or not ours to judge.
        let unreadable = store_base(None).join(format!("rayrepl-test-unreadable-{}", std::process::id()));
        std::fs::create_dir_all(&unreadable).unwrap();
        std::fs::write(unreadable.join(KEEPER_FILE), "").unwrap();
        assert!(remove_stale_stores(&store_base(None)) >= 1);
        assert!(!dead.exists(), "a dead node's store was kept");
        assert!(mine.exists(), "a live node's store was removed");
        assert!(unreadable.exists(), "a store with an unreadable keeper was removed");
        std::fs::remove_dir_all(&mine).unwrap();
        std::fs::remove_dir_all(&unreadable).unwrap();
        drop(store);
        let _ = std::fs::remove_dir_all(&live);
    }

    #[test]
    fn capacity_is_enforced_with_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("rayrepl-store-cap-{}", std::process::id()));
        let mut store = StoreIndex::new(dir, 100).unwrap();
        store.reserve(id(1), 60, "o").unwrap();
        let err = store.reserve(id(2), 50, "o").unwrap_err();
        assert!(matches!(err, StoreError::Full { requested: 50, used: 60, capacity: 100 }));
        let ray: RayError = err.into();
        assert!(ray.to_string().contains("object_store_memory"));
        store.free(&id(1));
        store.reserve(id(2), 50, "o").unwrap();
        store.destroy();
    }
}
