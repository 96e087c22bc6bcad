use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use tokio::net::TcpListener;

use crate::keys::unescape;
use crate::{AuthToken, MetadataTable, TableReply, TableRequest};

/// Settings of [`HttpMetadataServer`].
#[derive(Debug, Clone)]
pub struct HttpMetadataServerConfig {
    /// Largest accepted PUT body in bytes (a descriptor with many buffers can be MiBs).
    /// Larger bodies get HTTP 413. Default 64 MiB.
    pub max_value_size: usize,
    /// When set, `PUT` and `DELETE` need `Authorization: Bearer <token>` (HTTP 401
    /// otherwise); reads stay open, as C++ engines must still find our descriptors.
    pub auth_token: Option<AuthToken>,
}

impl Default for HttpMetadataServerConfig {
    fn default() -> Self {
        Self {
            max_value_size: 64 << 20,
            auth_token: None,
        }
    }
}

/// A server of Mooncake's HTTP metadata protocol (`/metadata?key=…` and `/health`).
///
/// Answers exactly as the C++ master's embedded server does (see [`MetadataTable`]),
/// except that keys are percent-decoded (as the Python server does) and that it listens
/// only on the listener it is given.
#[derive(Debug, Clone)]
pub struct HttpMetadataServer {
    table: Arc<MetadataTable>,
    config: HttpMetadataServerConfig,
}

impl HttpMetadataServer {
    /// A server with an empty table.
    pub fn new(config: HttpMetadataServerConfig) -> Self {
        Self {
            table: Arc::new(MetadataTable::new()),
            config,
        }
    }

    /// The table this server answers from.
    pub fn table(&self) -> &Arc<MetadataTable> {
        &self.table
    }

    /// The routes, for embedding into another axum server (the master merges them with
    /// its own `/metrics`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metadata", any(metadata))
            .route("/health", get(|| async { "OK" }))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
            .layer(DefaultBodyLimit::max(self.config.max_value_size))
            .with_state(Served {
                table: self.table.clone(),
                auth_token: self.config.auth_token.clone().map(Arc::new),
            })
    }

    /// Serves `listener` until `shutdown` completes, then finishes in-flight requests.
    pub async fn run<F>(self, listener: TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "http metadata server listening");
        }
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// The decoded `key` query parameter, `Err` when it is not valid percent-encoded UTF-8.
fn key_param(query: Option<&str>) -> Result<Option<String>, ()> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        if let Some(raw) = pair.strip_prefix("key=") {
            return unescape(raw).map(Some).ok_or(());
        }
        if pair == "key" {
            return Ok(Some(String::new()));
        }
    }
    Ok(None)
}

/// What the routes share.
#[derive(Clone)]
struct Served {
    table: Arc<MetadataTable>,
    auth_token: Option<Arc<AuthToken>>,
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    AuthToken::from_bearer(headers.get(header::AUTHORIZATION)?.as_bytes())
}

async fn metadata(
    State(Served { table, auth_token }): State<Served>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let writes = method == Method::PUT || method == Method::DELETE;
    if writes && !AuthToken::admits(auth_token.as_deref(), bearer(&headers)) {
        tracing::warn!(%method, "metadata write refused: authentication failed");
        return (
            StatusCode::UNAUTHORIZED,
            "authentication failed: this metadata server needs `Authorization: Bearer <token>` (MOONCAKE_AUTH_TOKEN) for writes",
        )
            .into_response();
    }
    let Ok(key) = key_param(query.as_deref()) else {
        return (
            StatusCode::BAD_REQUEST,
            "key is not valid percent-encoded UTF-8",
        )
            .into_response();
    };
    let request = match method {
        Method::GET => TableRequest::Get { key },
        Method::PUT => TableRequest::Put { key, body },
        Method::DELETE => TableRequest::Delete { key },
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    let TableReply { status, body, json } = table.handle(request);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::key_param;

    #[test]
    fn key_param_decodes_and_finds_key() {
        assert_eq!(key_param(None), Ok(None));
        assert_eq!(key_param(Some("other=1")), Ok(None));
        assert_eq!(key_param(Some("x=1&key=a%20b%3F")), Ok(Some("a b?".into())));
        assert_eq!(key_param(Some("key=")), Ok(Some(String::new())));
        assert_eq!(key_param(Some("key")), Ok(Some(String::new())));
        assert_eq!(key_param(Some("key=%FF")), Err(()));
    }
}
