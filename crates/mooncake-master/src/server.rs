//! The master process: gRPC service, admin/metrics HTTP, optional embedded HTTP metadata
//! server and the periodic tick, bound and run together.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use mooncake_metadata::{AuthToken, HttpMetadataServer, HttpMetadataServerConfig};
use mooncake_store::grpc::ServeOptions;
use mooncake_store::MasterApi;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ha::HaNode;
use crate::{HaConfig, Master, MasterConfig, StateConfig, StateError};

/// Where the master listens and what it runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The object-metadata core's settings.
    pub master: MasterConfig,
    /// gRPC address (`--rpc_address:--rpc_port`), e.g. `0.0.0.0:50051`.
    pub rpc_addr: String,
    /// Embedded HTTP metadata server (`--enable_http_metadata_server`), e.g. `0.0.0.0:8080`.
    pub http_metadata_addr: Option<String>,
    /// Admin and metrics HTTP server (`--metrics_host:--metrics_port`).
    pub metrics_addr: Option<String>,
    /// The cluster's token (`--auth_token`): required by the RPC port, by writes to the
    /// embedded HTTP metadata server and by the admin API (`/api/v1/…`). Default none.
    pub auth_token: Option<AuthToken>,
    /// RPC connections served at once (TCP and the local socket together).
    pub max_connections: usize,
    /// Restart durability (`--state_dir`); `None` (the default): a restart starts empty.
    pub state: Option<StateConfig>,
    /// High availability (`--enable_ha`): this master joins a group electing its leader
    /// through etcd; `None` (the default): it serves alone. An empty
    /// [`HaConfig::advertise_rpc`] is the bound RPC address (which must then not be a
    /// wildcard address).
    pub ha: Option<HaConfig>,
}

impl ServerConfig {
    /// A master at `rpc_addr` with default settings and no other server.
    pub fn new(rpc_addr: impl Into<String>) -> Self {
        Self {
            master: MasterConfig::default(),
            rpc_addr: rpc_addr.into(),
            http_metadata_addr: None,
            metrics_addr: None,
            auth_token: None,
            max_connections: ServeOptions::default().max_connections,
            state: None,
            ha: None,
        }
    }
}

/// Errors starting the master.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot bind the {what} to {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address asked for.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The state directory could not be opened, read back or saved.
    #[error(transparent)]
    State(#[from] StateError),
    /// A server failed while running.
    #[error("the {what} failed: {reason}")]
    Serve {
        /// Which server.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// How the master serves: alone, or as a member of an HA group.
#[derive(Debug)]
enum Mode {
    Single(Arc<Master>),
    Ha(Arc<HaNode>),
}

/// A master with its listeners bound (ports known) but not yet serving.
#[derive(Debug)]
pub struct MasterServer {
    mode: Mode,
    rpc: TcpListener,
    metadata: Option<TcpListener>,
    metrics: Option<TcpListener>,
    auth_token: Option<AuthToken>,
    max_connections: usize,
}

async fn bind(what: &'static str, addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            what,
            addr: addr.to_owned(),
            source,
        })
}

fn local(l: &TcpListener) -> SocketAddr {
    l.local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

impl MasterServer {
    /// Binds every listener exactly at the address given (port 0 picks a free one).
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        if config.ha.is_some() && config.state.is_some() {
            return Err(ServerError::Serve {
                what: "master",
                reason: "--state_dir cannot be combined with --enable_ha: in an HA group the standbys hold the state".into(),
            });
        }
        // The state first: a second master on the same directory fails on its lock, before
        // it takes any port.
        let single = match &config.ha {
            None => Some(Master::open(config.master.clone(), config.state.as_ref())?),
            Some(_) => None,
        };
        let rpc = bind("master rpc listener", &config.rpc_addr).await?;
        let mode = match (single, config.ha) {
            (Some(m), _) => Mode::Single(m),
            (None, Some(mut ha)) => {
                if ha.advertise_rpc.is_empty() {
                    let bound = local(&rpc);
                    if bound.ip().is_unspecified() {
                        return Err(ServerError::Serve {
                            what: "ha election",
                            reason: format!(
                                "the RPC address {bound} is a wildcard: give --rpc_address (or --ha_advertise_address) an address clients can reach"
                            ),
                        });
                    }
                    ha.advertise_rpc = bound.to_string();
                }
                Mode::Ha(HaNode::new(ha, config.master, config.auth_token.clone()).await?)
            }
            (None, None) => unreachable!("a master is either single or in a group"),
        };
        let metadata = match &config.http_metadata_addr {
            Some(a) => Some(bind("http metadata server", a).await?),
            None => None,
        };
        let metrics = match &config.metrics_addr {
            Some(a) => Some(bind("metrics server", a).await?),
            None => None,
        };
        Ok(Self {
            mode,
            rpc,
            metadata,
            metrics,
            auth_token: config.auth_token,
            max_connections: config.max_connections,
        })
    }

    /// The master itself, for in-process clients and tests (`None` in an HA group, where
    /// the serving master changes with each term).
    pub fn master(&self) -> Option<&Arc<Master>> {
        match &self.mode {
            Mode::Single(m) => Some(m),
            Mode::Ha(_) => None,
        }
    }

    /// In an HA group: the address this master's replication stream is published at.
    pub fn replication_addr(&self) -> Option<&str> {
        match &self.mode {
            Mode::Single(_) => None,
            Mode::Ha(n) => Some(n.replication_addr()),
        }
    }

    /// The bound gRPC address.
    pub fn rpc_addr(&self) -> SocketAddr {
        local(&self.rpc)
    }

    /// The bound HTTP metadata address, if enabled.
    pub fn http_metadata_addr(&self) -> Option<SocketAddr> {
        self.metadata.as_ref().map(local)
    }

    /// The bound metrics address, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(local)
    }

    /// Serves until `shutdown` completes, then stops every server gracefully.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut tasks = tokio::task::JoinSet::new();
        let api: Arc<dyn MasterApi> = match &self.mode {
            Mode::Single(m) => m.clone(),
            Mode::Ha(n) => n.switch.clone(),
        };
        let options = ServeOptions {
            auth_token: self.auth_token.clone(),
            max_connections: self.max_connections,
        };
        tasks.spawn({
            let s = stopped(stop_rx.clone());
            async move {
                mooncake_store::grpc::serve_with(self.rpc, api, options, s)
                    .await
                    .map_err(|e| ServerError::Serve {
                        what: "master rpc server",
                        reason: e.to_string(),
                    })
            }
        });
        if let Some(l) = self.metadata {
            let s = stopped(stop_rx.clone());
            let auth_token = self.auth_token.clone();
            tasks.spawn(async move {
                HttpMetadataServer::new(HttpMetadataServerConfig {
                    auth_token,
                    ..HttpMetadataServerConfig::default()
                })
                .run(l, s)
                .await
                .map_err(|e| ServerError::Serve {
                    what: "http metadata server",
                    reason: e.to_string(),
                })
            });
        }
        if let Some(l) = self.metrics {
            let s = stopped(stop_rx.clone());
            let router = match &self.mode {
                Mode::Single(m) => admin_router(m.clone(), self.auth_token.clone()),
                Mode::Ha(n) => n.router(),
            };
            tasks.spawn(async move {
                axum::serve(l, router)
                    .with_graceful_shutdown(s)
                    .await
                    .map_err(|e| ServerError::Serve {
                        what: "metrics server",
                        reason: e.to_string(),
                    })
            });
        }
        match &self.mode {
            Mode::Single(master) => {
                let (m, s) = (master.clone(), stopped(stop_rx.clone()));
                tasks.spawn(async move {
                    m.run_ticker(Duration::from_millis(10), s).await;
                    Ok(())
                });
                let (m, s) = (master.clone(), stopped(stop_rx.clone()));
                tasks.spawn(async move {
                    m.run_state_syncer(s).await;
                    Ok(())
                });
            }
            Mode::Ha(node) => {
                let (n, s) = (node.clone(), stopped(stop_rx.clone()));
                tasks.spawn(async move {
                    n.run(s).await;
                    Ok(())
                });
            }
        }
        let mut first_error = None;
        tokio::select! {
            _ = shutdown => {}
            Some(done) = tasks.join_next() => {
                if let Ok(Err(e)) = done {
                    first_error = Some(e);
                }
            }
        }
        let _ = stop_tx.send(true);
        while let Some(done) = tasks.join_next().await {
            if let (Ok(Err(e)), None) = (done, &first_error) {
                first_error = Some(e);
            }
        }
        // Every server has stopped: the state is final, and the next start loads a
        // snapshot with no log to replay.
        if let Mode::Single(master) = &self.mode {
            let master = master.clone();
            let saved = tokio::task::spawn_blocking(move || master.save_state()).await;
            if let (Ok(Err(e)), None) = (saved, &first_error) {
                first_error = Some(e.into());
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[derive(serde::Deserialize)]
struct KeyQuery {
    key: String,
}

/// `/metrics`, `/health`, `/get_all_keys`, `/get_all_segments`, `/query_key?key=`, and
/// the drain-job API (`admin.rs`).
pub(crate) fn admin_router(master: Arc<Master>, token: Option<AuthToken>) -> Router {
    let token = token.map(Arc::new);
    let admin = crate::admin::routes().route_layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let presented = req
                    .headers()
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| AuthToken::from_bearer(v.as_bytes()));
                if AuthToken::admits(token.as_deref(), presented) {
                    next.run(req).await
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        "authentication failed: the admin API needs `Authorization: Bearer <token>` (MOONCAKE_AUTH_TOKEN)",
                    )
                        .into_response()
                }
            }
        },
    ));
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Master>>| async move { m.render_metrics() }),
        )
        .route("/health", get(|| async { "OK" }))
        .route(
            "/get_all_keys",
            get(|State(m): State<Arc<Master>>| async move { lines(m.keys()) }),
        )
        .route(
            "/get_all_segments",
            get(|State(m): State<Arc<Master>>| async move { lines(m.segment_names()) }),
        )
        .route("/query_key", get(query_key))
        .merge(admin)
        .merge(crate::explain::routes())
        .merge(crate::status_page::routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 Not Found") })
        .with_state(master)
}

fn lines(mut items: Vec<String>) -> String {
    items.sort();
    let mut out = items.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

async fn query_key(State(m): State<Arc<Master>>, Query(q): Query<KeyQuery>) -> impl IntoResponse {
    match m.query_key(&q.key) {
        Some(replicas) => (StatusCode::OK, replicas),
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "{{\"error_code\":{}}}",
                mooncake_store::ErrorCode::ObjectNotFound.code()
            ),
        ),
    }
}
