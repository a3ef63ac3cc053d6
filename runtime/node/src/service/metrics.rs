//! Prometheus metrics of a node, on Ray's `--metrics-export-port`.
//!
//! Ray runs a metrics agent on every node; Prometheus scrapes each one. Here the
//! node daemon plays that part: `GET /metrics` answers in Prometheus text format
//! with what the node already keeps (leases granted, workers started and alive,
//! queued requests, resources, its object store). The node beside the head adds
//! the cluster's numbers as the head's tables hold them (nodes, jobs, actors and
//! placement groups by state, task records by name and state), read through
//! the head's own calls, so a single scrape target describes the cluster as
//! Ray's head node does.
//!
//! Numbers are read when scraped, not pushed: a registry is filled from the
//! node's state for each request, so nothing is counted twice and the hot paths
//! only keep the counters they kept before. The server is plain HTTP/1 and
//! binds where the node's other listeners do.

use super::Shared;
use crate::pool::WorkerState;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use ray_abi::ids::hex;
use ray_proto::{Empty, ListTasksRequest};
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: i64) -> Gauge {
    let g = Gauge::default();
    g.set(value);
    g
}

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_string(), value.to_string())]
}

/// How many of `values` there are of each, labelled `name`.
fn count_by<'a>(name: &str, values: impl Iterator<Item = &'a str>) -> Family<Labels, Gauge> {
    let counts = Family::<Labels, Gauge>::default();
    for value in values {
        counts.get_or_create(&label(name, value)).inc();
    }
    counts
}

impl Shared {
    /// The node's own numbers, now.
    fn register_node_metrics(&self, registry: &mut Registry) {
        let (leases, started, workers, idle, pending, total, free) = {
            let pool = self.pool();
            let workers = pool.workers().count();
            let idle = pool.workers().filter(|(_, w)| matches!(w.state, WorkerState::Idle(_))).count();
            let pending: u32 = pool.pending_demands().iter().map(|(_, n)| n).sum();
            let total = pool.total().clone();
            let free = pool.unclaimed();
            (pool.leases_granted(), pool.workers_started(), workers, idle, pending, total, free)
        };
        registry.register(
            "ray_node_leases_granted",
            "Worker leases this node granted (a lease runs one or more tasks, or an actor)",
            counter(leases),
        );
        registry.register("ray_node_workers_started", "Worker processes this node started", counter(started));
        registry.register("ray_node_workers", "Worker processes alive on this node", gauge(workers as i64));
        registry.register("ray_node_idle_workers", "Worker processes waiting for a lease", gauge(idle as i64));
        registry.register(
            "ray_node_pending_leases",
            "Lease requests queued here, waiting for resources",
            gauge(i64::from(pending)),
        );
        let resources = Family::<Labels, FloatGauge>::default();
        let available = Family::<Labels, FloatGauge>::default();
        for (name, amount) in ray_proto::groups::plain(&total) {
            resources.get_or_create(&label("Name", &name)).set(amount);
            available.get_or_create(&label("Name", &name)).set(free.get(&name).copied().unwrap_or(0.0).max(0.0));
        }
        registry.register("ray_node_resources", "Resources this node offers", resources);
        registry.register("ray_node_resources_available", "Resources of this node no lease holds", available);
        let (capacity, used, objects) = {
            let store = self.store();
            (store.capacity(), store.used(), store.objects().count())
        };
        registry.register_with_unit(
            "ray_object_store_capacity",
            "Capacity of this node's shared-memory object store",
            Unit::Bytes,
            gauge(capacity as i64),
        );
        registry.register_with_unit(
            "ray_object_store_used",
            "Bytes held in this node's shared-memory object store",
            Unit::Bytes,
            gauge(used as i64),
        );
        registry.register(
            "ray_object_store_objects",
            "Objects in this node's shared-memory store",
            gauge(objects as i64),
        );
    }

    /// The cluster's numbers as the head keeps them; only the head's node adds them.
    async fn register_cluster_metrics(&self, registry: &mut Registry) -> Result<(), tonic::Status> {
        let mut head = self.head.clone();
        let info = head.get_cluster_info(Empty {}).await?.into_inner();
        let nodes = info.nodes.iter().map(|n| n.state().as_str_name());
        registry.register("ray_cluster_nodes", "Nodes the head knows, by state", count_by("State", nodes));
        let jobs = head.list_jobs(Empty {}).await?.into_inner().jobs;
        let jobs = count_by("Status", jobs.iter().map(|j| j.status().as_str_name()));
        registry.register("ray_cluster_jobs", "Jobs (drivers) by status", jobs);
        let actors = head.list_actors(Empty {}).await?.into_inner().actors;
        registry.register(
            "ray_actors",
            "Actors by state",
            count_by("State", actors.iter().map(|a| a.state().as_str_name())),
        );
        let groups = head.list_placement_groups(Empty {}).await?.into_inner().groups;
        let groups = count_by("State", groups.iter().map(|g| g.state().as_str_name()));
        registry.register("ray_placement_groups", "Placement groups by state", groups);
        // One record, and the head's counts of all of them.
        let tasks = head.list_tasks(ListTasksRequest { limit: 1, newest: true, counts: true }).await?.into_inner();
        let by_state = Family::<Labels, Gauge>::default();
        for c in &tasks.counts {
            let labels =
                vec![("State".to_string(), c.state().as_str_name().to_string()), ("Name".into(), c.name.clone())];
            by_state.get_or_create(&labels).inc_by(c.count as i64);
        }
        registry.register(
            "ray_tasks",
            "Task attempts the head keeps a record of (its newest 100,000), by state and name",
            by_state,
        );
        Ok(())
    }

    /// The whole scrape, in Prometheus text format.
    async fn metrics_text(&self) -> Result<String, String> {
        let labels = [
            (Cow::Borrowed("NodeAddress"), Cow::Owned(self.config.ip.clone())),
            (Cow::Borrowed("NodeId"), Cow::Owned(hex(&self.node_id))),
        ];
        let mut registry = Registry::with_labels(labels.into_iter());
        self.register_node_metrics(&mut registry);
        if self.config.is_head {
            self.register_cluster_metrics(&mut registry)
                .await
                .map_err(|s| format!("the head did not answer for the cluster's metrics: {}", s.message()))?;
        }
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).map_err(|e| format!("cannot encode the metrics: {e}"))?;
        Ok(text)
    }

    async fn answer_metrics(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, content_type: &str, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            if let Ok(v) = content_type.parse() {
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            r
        };
        if req.uri().path() != "/metrics" {
            return reply(StatusCode::NOT_FOUND, "text/plain", "rayrepl serves its metrics at /metrics\n".into());
        }
        match self.metrics_text().await {
            Ok(text) => reply(StatusCode::OK, prometheus_text::CONTENT_TYPE, text),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{why}\n")),
        }
    }
}

/// Serves `/metrics` on `listener` until the task is dropped, over https when
/// the cluster uses TLS (scrapers need the cluster CA, not a certificate of
/// their own). Scrapers carry no token, so a connection counts as admitted once
/// it asks for something; one that never does is closed, as on every listener
/// (see [`ray_proto::gate`]).
pub(super) async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let tls = match ray_proto::tls::config() {
        Ok(Some(tls)) => match tls.http_server() {
            Ok(config) => Some(tokio_rustls::TlsAcceptor::from(config)),
            Err(e) => return tracing::error!("the metrics server cannot serve TLS: {e}"),
        },
        _ => None,
    };
    let listener = ray_proto::gate::GatedListener::new(listener);
    loop {
        let stream = listener.accept().await;
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let peer = stream.peer().clone();
            let service = hyper::service::service_fn(move |req| {
                peer.authenticated();
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(shared.answer_metrics(req).await) }
            });
            let stream: Box<dyn ray_proto::tls::Stream> = match tls {
                None => Box::new(stream),
                Some(tls) => match tokio::time::timeout(HANDSHAKE_LIMIT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    Ok(Err(e)) => return tracing::debug!("a metrics TLS handshake failed: {e}"),
                    Err(_) => return tracing::debug!("no metrics TLS handshake within {HANDSHAKE_LIMIT:?}"),
                },
            };
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("a metrics connection ended: {e}");
            }
        });
    }
}

/// How long a scraper's TLS handshake may take.
const HANDSHAKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
