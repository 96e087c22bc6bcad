//! Read-only views of segments and clients for the status page, `/api/v1/status` and
//! the `mooncake` admin CLI.

use std::time::Instant;

use serde::Serialize;

use super::{DrainJobView, MasterCore};

/// A mounted segment as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentView {
    /// The segment's name (`host:port` of its transfer engine).
    pub name: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Bytes allocated to replicas.
    pub used: u64,
    /// The client holding it (hex).
    pub holder: String,
    /// The transfer endpoint replicas are read from.
    pub endpoint: String,
    /// Whether its holder is alive (pinged within `client_ttl`).
    pub alive: bool,
    /// `ok`, `draining`, `drained` or `detached` (a durable segment waiting for its
    /// owner's restart).
    pub status: &'static str,
    /// Backed by a durable file that survives its holder's restart.
    pub durable: bool,
}

/// A client the master knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientView {
    /// The client id (hex).
    pub id: String,
    /// Whether it is alive (it pings; `false`: it must remount).
    pub alive: bool,
    /// Segments it contributes.
    pub segments: Vec<String>,
    /// Milliseconds before it expires without a ping (`None`: no deadline).
    pub expires_in_ms: Option<u64>,
}

impl MasterCore {
    /// Every mounted segment, by name.
    pub fn segment_views(&self) -> Vec<SegmentView> {
        let mut out: Vec<SegmentView> = self
            .segments
            .values()
            .map(|m| SegmentView {
                name: m.segment.name.clone(),
                capacity: m.segment.size,
                used: m.alloc.allocated_bytes(),
                holder: format!("{:x}", m.client.0),
                endpoint: m.segment.te_endpoint.clone(),
                alive: m.detached_until.is_none()
                    && self.clients.get(&m.client).is_some_and(|c| c.alive),
                status: if m.detached_until.is_some() {
                    "detached"
                } else if m.drained {
                    "drained"
                } else if m.draining {
                    "draining"
                } else {
                    "ok"
                },
                durable: m.segment.durable,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Every client the master knows, by id.
    pub fn client_views(&self, now: Instant) -> Vec<ClientView> {
        let mut out: Vec<ClientView> = self
            .clients
            .iter()
            .map(|(id, c)| ClientView {
                id: format!("{:x}", id.0),
                alive: c.alive,
                segments: c
                    .segments
                    .iter()
                    .filter_map(|s| self.segments.get(s))
                    .map(|m| m.segment.name.clone())
                    .collect(),
                expires_in_ms: c
                    .deadline
                    .map(|d| d.saturating_duration_since(now).as_millis() as u64),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Every drain job the master keeps (running and finished).
    pub fn drain_job_views(&self) -> Vec<DrainJobView> {
        self.jobs.views().cloned().collect()
    }
}
