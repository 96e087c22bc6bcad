//! The shell of the core's key history and lookup counters: `GET /explain?key=`,
//! `GET /api/v1/status` (the status page's data and the admin CLI's), and the
//! `master_lookup_*` Prometheus counters.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use crate::core::{
    ClientView, JobStatus, KeyExplanation, LookupOp, MasterCore, MissCause, SegmentView,
};
use crate::metrics::Op;
use crate::Master;
use mooncake_store::ErrorCode;

/// `explain <key>`: the core's explanation with the wall-clock time it was asked at
/// (each event happened `ago_ms` before `asked_at_unix_ms`).
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// When the explanation was taken, in Unix ms.
    pub asked_at_unix_ms: u64,
    /// The key's state now and its remembered events.
    #[serde(flatten)]
    pub key: KeyExplanation,
}

/// Lookup outcomes of one operation.
#[derive(Debug, Clone, Serialize)]
pub struct LookupView {
    /// `exist_key` or `get_replica_list`.
    pub op: &'static str,
    /// Lookups that found a readable object.
    pub hits: u64,
    /// Misses by cause (every cause, zeros included).
    pub misses: Vec<(MissCause, u64)>,
}

/// The pool at a glance (`GET /api/v1/status`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When it was taken, in Unix ms.
    pub at_unix_ms: u64,
    /// Objects held (complete and in progress).
    pub key_count: u64,
    /// Bytes of mounted segments.
    pub capacity_bytes: u64,
    /// Bytes allocated to replicas.
    pub allocated_bytes: u64,
    /// Mounted segments.
    pub segments: Vec<SegmentView>,
    /// Known clients.
    pub clients: Vec<ClientView>,
    /// Lookup hits and misses by cause, per operation.
    pub lookups: Vec<LookupView>,
    /// Removes and clears refused because of a reader's lease.
    pub lease_conflicts: u64,
    /// Objects evicted so far.
    pub evicted_keys: u64,
    /// Request counters since start (`put_start`, `put_end`, `get_replica_list`, …), for
    /// rates.
    pub requests: Vec<(&'static str, u64)>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

const RATE_OPS: [(Op, &str); 6] = [
    (Op::PutStart, "put_start"),
    (Op::PutEnd, "put_end"),
    (Op::GetReplicaList, "get_replica_list"),
    (Op::ExistKey, "exist_key"),
    (Op::Remove, "remove"),
    (Op::PutRevoke, "put_revoke"),
];

impl Master {
    /// What the master knows of `key`: its state and recent history. Grants no lease.
    pub fn explain(&self, key: &str) -> Explanation {
        let key = self.inspect(|core| core.explain(key, Instant::now()));
        Explanation {
            asked_at_unix_ms: unix_ms(),
            key,
        }
    }

    /// Segments, clients, counters: the status page's data.
    pub fn status(&self) -> Status {
        let now = Instant::now();
        let mut status = self.inspect(|core| {
            let stats = core.lookup_stats();
            Status {
                at_unix_ms: unix_ms(),
                key_count: core.key_count() as u64,
                capacity_bytes: core.capacity(),
                allocated_bytes: core.allocated(),
                segments: core.segment_views(),
                clients: core.client_views(now),
                lookups: LookupOp::ALL
                    .iter()
                    .map(|op| LookupView {
                        op: op.as_str(),
                        hits: stats.hits(*op),
                        misses: MissCause::ALL
                            .iter()
                            .map(|c| (*c, stats.misses(*op, *c)))
                            .collect(),
                    })
                    .collect(),
                lease_conflicts: stats.lease_conflicts(),
                evicted_keys: core.eviction_stats().evicted_keys,
                requests: Vec::new(),
            }
        });
        status.requests = RATE_OPS
            .iter()
            .map(|(op, name)| (*name, self.metrics().requests(*op)))
            .collect();
        status
    }
}

/// [`Master::explain`] as JSON (the RPC's answer and `/explain`'s body).
pub(crate) fn explain_json(master: &Master, key: &str) -> Result<String, ErrorCode> {
    serde_json::to_string(&master.explain(key)).map_err(|_| ErrorCode::InternalError)
}

/// Appends `master_lookup_hits_total{op}`, `master_lookup_misses_total{op,cause}` and
/// `master_lease_conflicts_total` (called by [`Master::render_metrics`] under the lock).
pub(crate) fn render_lookup_metrics(core: &MasterCore, out: &mut String) {
    let stats = core.lookup_stats();
    let _ = writeln!(
        out,
        "# HELP master_lookup_hits_total Lookups that found a readable object.\n# TYPE master_lookup_hits_total counter"
    );
    for op in LookupOp::ALL {
        let _ = writeln!(
            out,
            "master_lookup_hits_total{{op=\"{}\"}} {}",
            op.as_str(),
            stats.hits(op)
        );
    }
    let _ = writeln!(
        out,
        "# HELP master_lookup_misses_total Lookups that found nothing readable, by cause.\n# TYPE master_lookup_misses_total counter"
    );
    for op in LookupOp::ALL {
        for cause in MissCause::ALL {
            let _ = writeln!(
                out,
                "master_lookup_misses_total{{op=\"{}\",cause=\"{}\"}} {}",
                op.as_str(),
                cause.as_str(),
                stats.misses(op, cause)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP master_lease_conflicts_total Removes and clears refused because a reader held a lease.\n# TYPE master_lease_conflicts_total counter\nmaster_lease_conflicts_total {}",
        stats.lease_conflicts()
    );
    render_pool_metrics(core, out);
}

/// Segments by status and drain-job progress (gauges).
fn render_pool_metrics(core: &MasterCore, out: &mut String) {
    let segments = core.segment_views();
    let _ = writeln!(
        out,
        "# HELP master_segments Mounted segments by status.\n# TYPE master_segments gauge"
    );
    for status in ["ok", "draining", "drained", "detached"] {
        let n = segments.iter().filter(|s| s.status == status).count();
        let _ = writeln!(out, "master_segments{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "master_segments{{status=\"holder_lost\"}} {}",
        segments.iter().filter(|s| !s.alive).count()
    );
    let jobs = core.drain_job_views();
    let _ = writeln!(
        out,
        "# HELP master_drain_jobs Drain jobs kept by the master, by status.\n# TYPE master_drain_jobs gauge"
    );
    for status in [
        JobStatus::Created,
        JobStatus::Planning,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Canceled,
    ] {
        let n = jobs.iter().filter(|j| j.status == status).count();
        let _ = writeln!(out, "master_drain_jobs{{status=\"{}\"}} {n}", status.name());
    }
    let sum = |f: fn(&crate::DrainJobView) -> u64| jobs.iter().map(f).sum::<u64>();
    let gauges = [
        (
            "master_drain_migrated_bytes",
            "Bytes moved by the drain jobs kept.",
            sum(|j| j.migrated_bytes),
        ),
        (
            "master_drain_succeeded_units",
            "Objects moved by the drain jobs kept.",
            sum(|j| j.succeeded_units),
        ),
        (
            "master_drain_failed_units",
            "Objects drain jobs gave up on.",
            sum(|j| j.failed_units),
        ),
        (
            "master_drain_blocked_units",
            "Objects drain jobs could not move in their last round.",
            sum(|j| j.blocked_units),
        ),
        (
            "master_drain_active_units",
            "Drain moves in flight.",
            sum(|j| j.active_units),
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
}

#[derive(serde::Deserialize)]
struct KeyQuery {
    key: String,
}

fn json(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET /explain?key=` and `GET /api/v1/status` (read-only, like `/metrics`).
pub(crate) fn routes() -> Router<Arc<Master>> {
    Router::new()
        .route(
            "/explain",
            get(
                |State(m): State<Arc<Master>>, Query(q): Query<KeyQuery>| async move {
                    json(explain_json(&m, &q.key).unwrap_or_default())
                },
            ),
        )
        .route(
            "/api/v1/status",
            get(|State(m): State<Arc<Master>>| async move {
                json(serde_json::to_string(&m.status()).unwrap_or_default())
            }),
        )
}
