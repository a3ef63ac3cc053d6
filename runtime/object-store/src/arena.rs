//! One shared-memory file per node for the objects its processes create.
//!
//! A new tmpfs file per object costs a page fault and a freshly zeroed page for
//! every 4 KiB written, and its pages go back to the kernel when it is freed: a
//! put of 800 MB ran at a tenth of memory bandwidth. Like Ray's plasma store, the
//! node instead keeps one arena file that every process on the node maps once.
//! Freed ranges are reused, so their pages stay in memory and in each process's
//! page tables, and a put is one `memcpy`.
//!
//! Reuse must not pull a range from under a reader. Every allocation has a slot
//! in a table at the start of the file, holding the allocation's generation and a
//! count of readers that pin it while they read ([`ArenaMap::pin`]). Freeing an
//! object bars new pins at once, but its range is reused only once the count is
//! zero ([`Arena::retry_pending`]).
//!
//! Reused pages stay in memory while the node runs, as plasma's do, except that
//! an arena that has held no object for a while gives them back
//! ([`Arena::trim_if_idle`]): a session that once put gigabytes does not keep them.

use crate::{StoreError, io_err};
use memmap2::{MmapOptions, MmapRaw, UncheckedAdvice};
use offset_allocator::{Allocation, Allocator};
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The arena's file name in a store directory.
pub const ARENA_FILE: &str = "arena";

/// Allocation unit: a cache line, which also keeps every object 64-byte aligned.
const BLOCK: u64 = 64;
/// Slots in the table, so at most this many objects live in the arena at once
/// (the rest get files of their own).
const SLOTS: u32 = 65_536;
/// A slot: the generation of the allocation using it, then its reader count.
const SLOT_BYTES: u64 = 16;
/// Where object data starts: after the slot table.
const DATA_START: u64 = SLOTS as u64 * SLOT_BYTES;
/// Set in the reader count once the node freed the range: no pin can follow.
const FREED: u64 = 1 << 63;
/// Set in the reader count when the object is freed while readers still hold it:
/// no new pin, and the range is freed when the count drops to zero.
const DOOMED: u64 = 1 << 62;
/// The unit in which the data region is backed with memory (see [`Arena::back`]):
/// a put into a range already backed then costs no system call.
const BACKED_CHUNK: u64 = 2 << 20;
/// The largest data region the allocator addresses, in blocks of `BLOCK`.
const MAX_BLOCKS: u64 = u32::MAX as u64;

/// Where an object lives in its node's arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Offset of the first byte in the arena file.
    pub offset: u64,
    /// The object's size in bytes.
    pub len: u64,
    /// The allocation's slot in the table.
    pub slot: u32,
    /// Tells this allocation from later ones that reuse the slot.
    pub generation: u64,
}

/// A process's mapping of a node's arena.
#[derive(Debug)]
pub struct ArenaMap {
    map: MmapRaw,
    path: PathBuf,
}

impl ArenaMap {
    /// Maps the arena file at `path`, shared and writable.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err(path))?;
        let map = MmapOptions::new().map_raw(&file).map_err(io_err(path))?;
        if (map.len() as u64) < DATA_START {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not an object store arena"),
            });
        }
        Ok(ArenaMap { map, path: path.to_path_buf() })
    }

    /// The arena file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The generation and reader count of `slot`.
    fn slot(&self, slot: u32) -> Option<(&AtomicU64, &AtomicU64)> {
        if slot >= SLOTS {
            return None;
        }
        let at = slot as usize * SLOT_BYTES as usize;
        // SAFETY: the slot lies in the table (slot < SLOTS, and the map is at least
        // DATA_START long, checked at open), the mapping is page aligned so `at` is
        // 8-byte aligned, and the table is only ever accessed through atomics, by
        // every process that maps the file. Atomics on shared memory are coherent
        // across processes on one machine.
        unsafe {
            let base = self.map.as_mut_ptr().add(at);
            Some((AtomicU64::from_ptr(base.cast()), AtomicU64::from_ptr(base.add(8).cast())))
        }
    }

    fn check_bounds(&self, span: &Span) -> Option<()> {
        let end = span.offset.checked_add(span.len)?;
        (span.offset >= DATA_START && end <= self.map.len() as u64).then_some(())
    }

    /// Pins a sealed object for reading; `None` if its range was freed (or reused
    /// by another allocation) meanwhile.
    pub fn pin(self: &Arc<Self>, span: Span) -> Option<PinnedSpan> {
        self.check_bounds(&span)?;
        let (generation, readers) = self.slot(span.slot)?;
        let mut seen = readers.load(Ordering::Acquire);
        loop {
            if seen & (FREED | DOOMED) != 0 {
                return None;
            }
            match readers.compare_exchange_weak(seen, seen + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
        // The node stores the generation before it opens a reused slot to readers,
        // so a pin on a reused slot sees the new generation and backs out.
        if generation.load(Ordering::Acquire) != span.generation {
            readers.fetch_sub(1, Ordering::Release);
            return None;
        }
        Some(PinnedSpan { map: self.clone(), span })
    }

    /// Copies `bytes` into a span reserved for this process, `at` bytes in.
    pub fn write(&self, span: &Span, at: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let end = at.checked_add(bytes.len() as u64).filter(|&end| end <= span.len);
        if end.is_none() || self.check_bounds(span).is_none() {
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "write outside the object's span"),
            });
        }
        // SAFETY: the range lies inside the mapping (checked above). The node
        // reserved the span for this creator alone until it is sealed: no reader
        // pins an unsealed object, and no other allocation overlaps it, so nobody
        // else reads or writes these bytes while this slice lives.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add((span.offset + at) as usize), bytes.len())
        };
        copy(dst, bytes);
        Ok(())
    }
}

/// Below this, one thread copies: starting others costs more than it saves.
const PARALLEL_COPY_MIN: usize = 8 << 20;

/// Copies `src` into `dst` (of equal length), on several threads when it is
/// large: one core cannot saturate memory bandwidth (Ray's puts copy the same way).
fn copy(dst: &mut [u8], src: &[u8]) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if src.len() < PARALLEL_COPY_MIN || threads < 2 {
        dst.copy_from_slice(src);
        return;
    }
    let chunk = src.len().div_ceil(threads).next_multiple_of(4096);
    std::thread::scope(|scope| {
        let mut pieces = dst.chunks_mut(chunk).zip(src.chunks(chunk));
        let first = pieces.next();
        for (d, s) in pieces {
            scope.spawn(move || d.copy_from_slice(s));
        }
        if let Some((d, s)) = first {
            d.copy_from_slice(s);
        }
    });
}

/// A pinned, sealed object in an arena: its range is not reused while this lives.
#[derive(Debug)]
pub struct PinnedSpan {
    map: Arc<ArenaMap>,
    span: Span,
}

impl PinnedSpan {
    /// The object's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: bounds were checked when pinning. The object is sealed, so
        // nobody writes it, and the pin keeps the node from freeing (and so
        // reusing) the range until this is dropped.
        unsafe {
            std::slice::from_raw_parts(self.map.map.as_ptr().add(self.span.offset as usize), self.span.len as usize)
        }
    }
}

impl Drop for PinnedSpan {
    fn drop(&mut self) {
        if let Some((_, readers)) = self.map.slot(self.span.slot) {
            readers.fetch_sub(1, Ordering::Release);
        }
    }
}

/// The node's side of the arena: the file, its allocator and slot table.
pub struct Arena {
    /// The arena file, kept open to back ranges with memory as they are reserved.
    file: std::fs::File,
    map: Arc<ArenaMap>,
    allocator: Allocator,
    allocations: HashMap<u32, Allocation>,
    free_slots: Vec<u32>,
    next_generation: u64,
    /// Freed while readers held them: freed for real once the readers are done.
    pending: Vec<Span>,
    /// Since when no object has been in the arena.
    empty_since: Instant,
    /// Whether objects were written since the memory was last given back.
    touched: bool,
    /// Which [`BACKED_CHUNK`]s of the data region have memory (a bit each);
    /// giving the memory back clears them.
    backed: Vec<u64>,
    /// The data region's length in bytes.
    data_len: u64,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("path", &self.map.path)
            .field("live", &self.allocations.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Arena {
    /// Creates the arena file in `root` with room for `capacity` bytes of objects.
    /// The file is sparse: memory is taken as objects are written.
    pub fn create(root: &Path, capacity: u64) -> Result<Self, StoreError> {
        let path = root.join(ARENA_FILE);
        // The allocator searches bins rounded up by at most an eighth, so it could
        // not place an object as large as the whole store in a region of exactly
        // that size. Address space is free (the file is sparse, and the store
        // enforces `capacity` itself), so the region is an eighth larger.
        let blocks = (capacity + capacity / 8).div_ceil(BLOCK).clamp(1, MAX_BLOCKS);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        file.set_len(DATA_START + blocks * BLOCK).map_err(io_err(&path))?;
        // The slot table is written before any object; it is the only part
        // backed up front.
        allocate_space(&file, 0, DATA_START).map_err(io_err(&path))?;
        let map = Arc::new(ArenaMap::open(&path)?);
        Ok(Arena {
            file,
            map,
            allocator: Allocator::with_max_allocs(blocks as u32, SLOTS.saturating_mul(2)),
            allocations: HashMap::new(),
            free_slots: (0..SLOTS).rev().collect(),
            next_generation: 1,
            pending: Vec::new(),
            empty_since: Instant::now(),
            touched: false,
            backed: vec![0; (blocks * BLOCK).div_ceil(BACKED_CHUNK).div_ceil(64) as usize],
            data_len: blocks * BLOCK,
        })
    }

    /// This process's mapping of the arena.
    pub fn map(&self) -> &Arc<ArenaMap> {
        &self.map
    }

    /// Allocates `len` bytes; `None` when no free range or slot is left.
    pub fn allocate(&mut self, len: u64) -> Option<Span> {
        if self.free_slots.is_empty() && !self.pending.is_empty() {
            self.retry_pending();
        }
        let blocks = u32::try_from(len.div_ceil(BLOCK).max(1)).ok()?;
        let slot = *self.free_slots.last()?;
        let allocation = self.allocator.allocate(blocks).or_else(|| {
            self.retry_pending();
            self.allocator.allocate(blocks)
        })?;
        self.free_slots.pop();
        let generation = self.next_generation;
        self.next_generation += 1;
        let (slot_generation, readers) = self.map.slot(slot)?;
        // Generation first: a stale pin that lands after the count reopens sees it.
        slot_generation.store(generation, Ordering::Release);
        readers.store(0, Ordering::Release);
        self.allocations.insert(slot, allocation);
        self.touched = true;
        Some(Span { offset: DATA_START + allocation.offset as u64 * BLOCK, len, slot, generation })
    }

    /// Gives `span`'s range memory now, so that writing it cannot fault: the file
    /// is sparse, and a page that tmpfs cannot back when first written kills the
    /// writer with SIGBUS. Fails (`ENOSPC`) when the filesystem is full. Memory
    /// is taken in [`BACKED_CHUNK`]s and kept until the arena gives it back, so
    /// most puts find their range backed and make no system call.
    pub fn back(&mut self, span: &Span) -> std::io::Result<()> {
        if span.len == 0 {
            return Ok(());
        }
        let start = span.offset - DATA_START;
        let (first, last) = (start / BACKED_CHUNK, (start + span.len - 1) / BACKED_CHUNK);
        let is_backed = |backed: &[u64], c: u64| backed[(c / 64) as usize] & (1 << (c % 64)) != 0;
        let mut chunk = first;
        while chunk <= last {
            if is_backed(&self.backed, chunk) {
                chunk += 1;
                continue;
            }
            let run_start = chunk;
            while chunk <= last && !is_backed(&self.backed, chunk) {
                chunk += 1;
            }
            let from = run_start * BACKED_CHUNK;
            let to = (chunk * BACKED_CHUNK).min(self.data_len);
            match allocate_space(&self.file, DATA_START + from, to - from) {
                Ok(()) => {
                    for c in run_start..chunk {
                        self.backed[(c / 64) as usize] |= 1 << (c % 64);
                    }
                }
                // Whole chunks may not fit where the span itself does: back
                // just the span's part of them, unmarked.
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    let (from, to) = (from.max(start), to.min(start + span.len));
                    allocate_space(&self.file, DATA_START + from, to - from)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Frees a span once no reader pins it; until then it waits in `pending`.
    pub fn release(&mut self, span: Span) {
        if !self.try_release(span) {
            self.pending.push(span);
        }
    }

    /// Frees the spans whose readers have finished since they were released.
    pub fn retry_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for span in pending {
            self.release(span);
        }
    }

    /// Spans released but still pinned by readers.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn try_release(&mut self, span: Span) -> bool {
        let Some((generation, readers)) = self.map.slot(span.slot) else { return true };
        if generation.load(Ordering::Acquire) != span.generation {
            return true;
        }
        readers.fetch_or(DOOMED, Ordering::AcqRel);
        if readers.compare_exchange(DOOMED, FREED, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        if let Some(allocation) = self.allocations.remove(&span.slot) {
            self.allocator.free(allocation);
            self.free_slots.push(span.slot);
            if self.allocations.is_empty() {
                self.empty_since = Instant::now();
            }
        }
        true
    }

    /// Returns the memory of the object region to the kernel once the arena has
    /// held no object for `idle`; says whether it did.
    pub fn trim_if_idle(&mut self, idle: Duration) -> bool {
        if !self.touched || !self.allocations.is_empty() || self.empty_since.elapsed() < idle {
            return false;
        }
        let len = self.map.map.len() - DATA_START as usize;
        // SAFETY: no object lives in the region (no allocation, and so no pending
        // free and no pin: a pin needs a live allocation's generation), so no
        // process reads or writes these pages; later writers get fresh zero pages.
        // The slot table, before DATA_START, is kept.
        let removed = unsafe { self.map.map.unchecked_advise_range(UncheckedAdvice::Remove, DATA_START as usize, len) };
        match removed {
            Ok(()) => {
                self.touched = false;
                self.backed.fill(0);
                true
            }
            Err(e) => {
                tracing::debug!("could not give the idle object arena's memory back: {e}");
                false
            }
        }
    }
}

/// Backs `len` bytes of `file` from `offset` with storage (fallocate(2), which
/// also extends the file if needed); `ENOSPC` when the filesystem has no room.
/// (The arena's callers stay inside its length, which they set first.)
pub(crate) fn allocate_space(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return Ok(());
    }
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "range beyond the largest file offset"));
    };
    loop {
        // SAFETY: fallocate(2) on a descriptor we own; it touches no memory of ours.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena(name: &str, capacity: u64) -> (Arena, PathBuf) {
        let dir = std::env::temp_dir().join(format!("rayrepl-arena-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (Arena::create(&dir, capacity).unwrap(), dir)
    }

    #[test]
    fn a_written_span_reads_back_through_another_mapping() {
        let (mut arena, dir) = arena("rw", 1 << 20);
        let span = arena.allocate(11).unwrap();
        arena.map().write(&span, 0, b"hello ").unwrap();
        arena.map().write(&span, 6, b"world").unwrap();
        assert!(arena.map().write(&span, 6, b"world!").is_err(), "a write ran past the span");
        let reader = Arc::new(ArenaMap::open(&dir.join(ARENA_FILE)).unwrap());
        assert_eq!(reader.pin(span).unwrap().bytes(), b"hello world");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_large_write_split_across_threads_lands_in_order() {
        let len = PARALLEL_COPY_MIN * 2 + 12_345;
        let (mut arena, dir) = arena("large", len as u64);
        let span = arena.allocate(len as u64).unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        arena.map().write(&span, 0, &bytes).unwrap();
        assert!(arena.map().pin(span).unwrap().bytes() == bytes.as_slice());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_reserved_range_is_backed_once_and_again_after_a_trim() {
        use std::os::unix::fs::MetadataExt;
        let (mut arena, dir) = arena("back", 8 << 20);
        let file = dir.join(ARENA_FILE);
        let held = || std::fs::metadata(&file).unwrap().blocks() * 512;
        let table = held();
        let span = arena.allocate(3 << 20).unwrap();
        arena.back(&span).unwrap();
        let backed = held() - table;
        assert!(backed >= 3 << 20, "only {backed} bytes backed for a 3 MiB span");
        assert!(backed <= (3 << 20) + 2 * BACKED_CHUNK, "{backed} bytes backed for a 3 MiB span");
        arena.back(&span).unwrap();
        assert_eq!(held() - table, backed, "backing a backed range takes nothing more");
        arena.release(span);
        assert!(arena.trim_if_idle(Duration::ZERO));
        assert!(held() - table < BACKED_CHUNK, "the memory went back");
        let span = arena.allocate(1 << 20).unwrap();
        arena.back(&span).unwrap();
        assert!(held() - table >= 1 << 20, "a trimmed range is backed again");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_pinned_range_is_not_reused_until_its_reader_is_done() {
        let (mut arena, dir) = arena("pin", 1 << 10);
        let first = arena.allocate(1 << 10).unwrap();
        let pin = arena.map().pin(first).unwrap();
        arena.release(first);
        assert_eq!(arena.pending(), 1);
        assert!(arena.allocate(1 << 10).is_none(), "a pinned range was handed out again");
        drop(pin);
        let second = arena.allocate(1 << 10).expect("the range once its reader unpinned");
        assert_eq!(second.offset, first.offset);
        assert_eq!(arena.pending(), 0);
        // A reader that still holds the first object's span finds it gone.
        assert!(arena.map().pin(first).is_none(), "a stale span pinned a reused range");
        assert!(arena.map().pin(second).is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_idle_arena_gives_its_memory_back() {
        use std::os::unix::fs::MetadataExt;
        let (mut arena, dir) = arena("trim", 4 << 20);
        let file = dir.join(ARENA_FILE);
        let span = arena.allocate(4 << 20).unwrap();
        arena.map().write(&span, 0, &vec![7u8; 4 << 20]).unwrap();
        let held = std::fs::metadata(&file).unwrap().blocks();
        assert!(held * 512 >= 4 << 20, "the object's pages are not in the file");
        assert!(!arena.trim_if_idle(Duration::ZERO), "trimmed while an object lived");
        arena.release(span);
        assert!(!arena.trim_if_idle(Duration::from_secs(60)), "trimmed before the arena was idle long");
        assert!(arena.trim_if_idle(Duration::ZERO));
        let kept = std::fs::metadata(&file).unwrap().blocks() * 512;
        assert!(kept < DATA_START + (1 << 20), "the pages stayed: {kept} bytes, the slot table is {DATA_START}");
        assert!(!arena.trim_if_idle(Duration::ZERO), "trimmed twice");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_freed_span_cannot_be_pinned() {
        let (mut arena, dir) = arena("freed", 1 << 16);
        let span = arena.allocate(100).unwrap();
        arena.release(span);
        assert!(arena.map().pin(span).is_none());
        let outside = Span { offset: DATA_START + (1 << 20), ..span };
        assert!(arena.map().pin(outside).is_none(), "a span outside the arena");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
