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

use crate::{Master, MasterConfig, StateConfig, StateError};

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

/// A master with its listeners bound (ports known) but not yet serving.
#[derive(Debug)]
pub struct MasterServer {
    master: Arc<Master>,
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
        // The state first: a second master on the same directory fails on its lock, before
        // it takes any port.
        let master = Master::open(config.master, config.state.as_ref())?;
        let rpc = bind("master rpc listener", &config.rpc_addr).await?;
        let metadata = match &config.http_metadata_addr {
            Some(a) => Some(bind("http metadata server", a).await?),
            None => None,
        };
        let metrics = match &config.metrics_addr {
            Some(a) => Some(bind("metrics server", a).await?),
            None => None,
        };
        Ok(Self {
            master,
            rpc,
            metadata,
            metrics,
            auth_token: config.auth_token,
            max_connections: config.max_connections,
        })
    }

    /// The master itself (for in-process clients and tests).
    pub fn master(&self) -> &Arc<Master> {
        &self.master
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
        let api: Arc<dyn MasterApi> = self.master.clone();
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
            let router = admin_router(self.master.clone(), self.auth_token.clone());
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
        {
            let master = self.master.clone();
            let s = stopped(stop_rx.clone());
            tasks.spawn(async move {
                master.run_ticker(Duration::from_millis(10), s).await;
                Ok(())
            });
        }
        {
            let master = self.master.clone();
            let s = stopped(stop_rx.clone());
            tasks.spawn(async move {
                master.run_state_syncer(s).await;
                Ok(())
            });
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
        let master = self.master.clone();
        let saved = tokio::task::spawn_blocking(move || master.save_state()).await;
        if let (Ok(Err(e)), None) = (saved, &first_error) {
            first_error = Some(e.into());
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
fn admin_router(master: Arc<Master>, token: Option<AuthToken>) -> Router {
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
