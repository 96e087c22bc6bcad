//! `StoreService`: a process that only contributes memory to the pool, so cached data
//! outlives inference servers. Serves `/health` and `/metrics`; on shutdown it unmounts
//! its segment.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::{Client, ClientConfig, MasterApi, SetupError};

/// Settings of a store service.
#[derive(Debug, Clone)]
pub struct StoreServiceConfig {
    /// The contributing client (its `global_segment_size` is the memory offered).
    pub client: ClientConfig,
    /// Where `/health` and `/metrics` are served (`--host:--port`); `None` disables them.
    pub http_addr: Option<String>,
}

/// A running contributor.
#[derive(Debug)]
pub struct StoreService {
    client: Client,
    http: Option<TcpListener>,
}

impl StoreService {
    /// Connects to the master (gRPC, or `master` when given), mounts the segment and binds
    /// the HTTP listener.
    pub async fn start(
        config: StoreServiceConfig,
        master: Option<Arc<dyn MasterApi>>,
    ) -> Result<Self, SetupError> {
        if config.client.global_segment_size == 0 {
            return Err(SetupError::Protocol(
                "a store service needs --global_segment_size > 0".into(),
            ));
        }
        let client = match master {
            Some(m) => Client::with_master(config.client, m).await?,
            None => Client::setup(config.client).await?,
        };
        let http = match &config.http_addr {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(|source| SetupError::Bind {
                        addr: a.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        Ok(Self { client, http })
    }

    /// The contributing client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown`, then drains the segment (its sole replicas are copied to
    /// other segments, for up to `drain_timeout`), unmounts it and stops the engine.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SetupError> {
        // Standalone (setup_dummy) clients of this host reach us on
        // @mooncake_client_<port>.sock, <port> being the HTTP port.
        let standalone = self.http_addr().map(|a| {
            let name = crate::standalone::socket_name(a.port());
            let client = self.client.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::standalone::serve_standalone(name.clone(), client).await {
                    tracing::warn!(socket = %name, error = %e, "cannot serve standalone clients");
                }
            })
        });
        match self.http {
            Some(listener) => {
                let router = Router::new()
                    .route("/health", get(|| async { "OK" }))
                    .route("/metrics", get(metrics))
                    .with_state(self.client.clone());
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(|source| SetupError::Bind {
                        addr: "http".into(),
                        source,
                    })?;
            }
            None => shutdown.await,
        }
        if let Some(t) = standalone {
            t.abort();
        }
        tracing::info!("store service stopping: draining, then unmounting its segment");
        self.client
            .close()
            .await
            .map_err(|code| SetupError::Master {
                addr: "master".into(),
                code,
            })
    }
}

async fn metrics(State(client): State<Client>) -> String {
    let size = client.segment().map(|s| s.size).unwrap_or(0);
    let name = client.segment().map(|s| s.name.clone()).unwrap_or_default();
    let mut out = format!(
        "# TYPE mooncake_store_service_segment_bytes gauge\nmooncake_store_service_segment_bytes{{segment=\"{name}\"}} {size}\n\
         # HELP mooncake_client_read_misses_total Reads that missed although the master named replicas.\n\
         # TYPE mooncake_client_read_misses_total counter\n\
         mooncake_client_read_misses_total{{cause=\"transfer_failed\"}} {}\n",
        client.read_transfer_failures()
    );
    if let Some(tier) = client.disk_tier() {
        crate::disk::render_metrics(tier, &mut out);
    }
    out
}
