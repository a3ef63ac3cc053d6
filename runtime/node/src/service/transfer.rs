//! Moving objects between nodes.
//!
//! A task's argument or a `get` may name an object whose bytes sit in another
//! node's shared memory. The reader asks its own node for a local copy
//! ([`pull`]); that node streams the object from the holder in chunks
//! ([`read_stream`]), writes them straight into a new shared-memory file, and
//! tells the owner where the copy is, so the copy is freed with the object.
//! Concurrent pulls of one object share one transfer.

use super::Shared;
use bytes::Bytes;
use ray_abi::{ObjectId, RayError};
use ray_object_store::{Location, ObjectView, ObjectWriter, StoreError};
use ray_proto::{
    AuthChannel, ObjectChunk, ObjectCopyRequest, ReadObjectRequest, core_worker_client, lazy_channel, node_client,
    to_status,
};
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::OnceCell;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// The stream a node serves an object as.
pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = Result<ObjectChunk, Status>> + Send>>;

/// Transfers under way, by object: later pulls wait for the first.
pub(crate) type Pulls = std::sync::Mutex<std::collections::HashMap<ObjectId, Arc<OnceCell<PathBuf>>>>;

/// A slice of a mapped object, handed to the HTTP/2 layer without a copy.
struct MappedSlice {
    view: Arc<ObjectView>,
    range: Range<usize>,
}

impl AsRef<[u8]> for MappedSlice {
    fn as_ref(&self) -> &[u8] {
        &self.view.bytes()[self.range.clone()]
    }
}

/// Serves a sealed object of this node as chunks; the first carries the size.
pub(crate) async fn read_stream(shared: &Arc<Shared>, id: ObjectId) -> Result<ChunkStream, Status> {
    let missing = || Status::not_found(format!("object {id} is not in the object store of node {}", shared.address));
    let (location, arena) = {
        let mut store = shared.store();
        (store.sealed_location(&id).ok_or_else(missing)?, store.arena_map().cloned())
    };
    let view = match (location.span, arena) {
        // Pinned: the range is not reused while the stream reads it.
        (Some(span), Some(arena)) => ObjectView::pinned(&arena, span).ok_or_else(missing)?,
        _ => tokio::task::spawn_blocking(move || ObjectView::open(&location.path))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(store_status)?,
    };
    let view = Arc::new(view);
    let size = view.bytes().len();
    let chunk = ray_proto::OBJECT_CHUNK_BYTES;
    let chunks = size.div_ceil(chunk).max(1);
    let stream = tokio_stream::iter(0..chunks).map(move |i| {
        let range = i * chunk..size.min((i + 1) * chunk);
        let data = Bytes::from_owner(MappedSlice { view: view.clone(), range });
        Ok(ObjectChunk { size: if i == 0 { size as u64 } else { 0 }, data })
    });
    Ok(Box::pin(stream))
}

/// Makes sure this node holds `id`, copying it from the node at `source` if not,
/// and returns where it is here.
pub(crate) async fn pull(shared: &Arc<Shared>, id: ObjectId, owner: &str, source: &str) -> Result<Location, Status> {
    if let Some(location) = shared.store().sealed_location(&id) {
        return Ok(location);
    }
    let cell = shared.pulls.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_default().clone();
    let result = cell
        .get_or_try_init(|| copy_from(shared, id, owner, source))
        .await
        .map(|path| Location { path: path.clone(), span: None });
    let mut pulls = shared.pulls.lock().unwrap_or_else(|p| p.into_inner());
    if pulls.get(&id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
        pulls.remove(&id);
    }
    result
}

async fn copy_from(shared: &Arc<Shared>, id: ObjectId, owner: &str, source: &str) -> Result<PathBuf, Status> {
    let mut holder = node_client(shared.channel(source)?);
    let mut stream = holder
        .read_object(ReadObjectRequest { object_id: id.0.to_vec().into() })
        .await
        .map_err(|s| source_failed(s, source))?
        .into_inner();
    let first = stream
        .message()
        .await
        .map_err(|s| source_failed(s, source))?
        .ok_or_else(|| Status::data_loss(format!("node {source} sent no bytes of object {id}")))?;
    let size = first.size;
    let started = std::time::Instant::now();
    let path = shared.store().reserve_copy(id, size, owner).map_err(store_status)?;
    let written = async {
        let file = path.clone();
        let mut writer = blocking(move || ObjectWriter::create(&file, size)).await?;
        let mut next = Some(first.data);
        while let Some(data) = next {
            // A chunk is a couple of MiB: copy it off the async threads.
            writer = blocking(move || writer.append(&data).map(|()| writer)).await?;
            next = stream.message().await.map_err(|s| source_failed(s, source))?.map(|c| c.data);
        }
        blocking(move || writer.finish()).await
    }
    .await;
    if let Err(e) = written {
        shared.store().free(&id);
        return Err(e);
    }
    shared.store().seal(&id).map_err(store_status)?;
    let secs = started.elapsed().as_secs_f64();
    tracing::debug!("copied {id} ({size} bytes) from {source} in {secs:.3} s ({:.2} GB/s)", size as f64 / secs / 1e9);
    tokio::spawn(tell_owner(shared.clone(), id, owner.to_string()));
    Ok(path)
}

/// Registers the copy with the object's owner, which frees it with the object; a
/// copy nobody owns any more goes at once.
async fn tell_owner(shared: Arc<Shared>, id: ObjectId, owner: String) {
    let request = ObjectCopyRequest { object_id: id.0.to_vec().into(), node_address: shared.address.clone() };
    let held = match shared.channel(&owner) {
        Ok(channel) => core_worker_client(channel).add_object_copy(request).await.map(|r| r.into_inner().held),
        Err(e) => Err(e),
    };
    if !matches!(held, Ok(true)) {
        tracing::debug!("freeing the copy of {id}: its owner {owner} no longer holds it ({held:?})");
        shared.store().free(&id);
    }
}

impl Shared {
    /// A channel to another process of the cluster, made once per address.
    pub(crate) fn channel(&self, address: &str) -> Result<AuthChannel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let channel = lazy_channel(address, &self.config.token).map_err(|e| to_status(&e))?;
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(e.to_string()))?.map_err(store_status)
}

fn store_status(e: StoreError) -> Status {
    to_status(&RayError::from(e))
}

fn source_failed(s: Status, source: &str) -> Status {
    if s.code() == tonic::Code::NotFound {
        return s;
    }
    Status::unavailable(format!("cannot copy the object from node {source}: {}", s.message()))
}
