use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::keys::escape;
use crate::{AuthToken, MetadataError, MetadataStore, MetadataUri};

/// Timeouts of [`HttpStore`]; the defaults are those of the C++ client (curl).
#[derive(Debug, Clone)]
pub struct HttpStoreConfig {
    /// Time allowed to establish the TCP connection. Default 1.5 s.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, connection included. Default 3 s.
    pub request_timeout: Duration,
    /// Token sent as `Authorization: Bearer <token>` (a server started with a token refuses
    /// writes without it). Default none.
    pub auth_token: Option<AuthToken>,
}

impl Default for HttpStoreConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(1500),
            request_timeout: Duration::from_secs(3),
            auth_token: None,
        }
    }
}

/// A client of Mooncake's HTTP metadata protocol: `GET/PUT/DELETE <base>?key=<escaped>`.
///
/// Keys are escaped as `curl_easy_escape` does, so the C++ master's server (which matches
/// the raw escaped value) and the Python server (which decodes it) both see the same key
/// the C++ engine would send. Only 200 is success; 404 means missing.
#[derive(Debug, Clone)]
pub struct HttpStore {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    config: HttpStoreConfig,
}

impl HttpStore {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8080/metadata`).
    /// Connections are opened lazily and kept alive.
    pub fn new(base: &str, config: HttpStoreConfig) -> Result<Self, MetadataError> {
        let MetadataUri::Http { base } = MetadataUri::parse(base)? else {
            return Err(MetadataError::InvalidUri {
                input: base.to_owned(),
                reason: "an http metadata server URL must start with http://".to_owned(),
            });
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            base,
            client,
            config,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, key: &str) -> String {
        format!("{}?key={}", self.base, escape(key))
    }

    async fn request(
        &self,
        method: Method,
        key: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), MetadataError> {
        if key.is_empty() {
            return Err(MetadataError::EmptyKey);
        }
        let url = self.url(key);
        let is_put = method == Method::PUT;
        let mut builder = Request::builder().method(method).uri(&url);
        if is_put {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.config.auth_token {
            builder = builder.header(header::AUTHORIZATION, token.bearer());
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| MetadataError::InvalidUri {
                input: url.clone(),
                reason: e.to_string(),
            })?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
        };
        match tokio::time::timeout(self.config.request_timeout, exchange).await {
            Err(_) => Err(MetadataError::Timeout {
                url,
                timeout: self.config.request_timeout,
            }),
            Ok(Err(e)) => Err(MetadataError::Unreachable {
                url,
                reason: error_chain(&*e),
            }),
            Ok(Ok(reply)) => Ok(reply),
        }
    }

    fn status_error(
        &self,
        method: &'static str,
        key: &str,
        status: StatusCode,
        body: &[u8],
    ) -> MetadataError {
        let mut text = String::from_utf8_lossy(body).into_owned();
        text.truncate(200);
        MetadataError::Status {
            url: self.url(key),
            method,
            status: status.as_u16(),
            body: text,
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[async_trait]
impl MetadataStore for HttpStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, MetadataError> {
        let (status, body) = self.request(Method::GET, key, Bytes::new()).await?;
        match status {
            StatusCode::OK => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(self.status_error("GET", key, other, &body)),
        }
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), MetadataError> {
        let (status, body) = self.request(Method::PUT, key, value).await?;
        match status {
            StatusCode::OK => Ok(()),
            other => Err(self.status_error("PUT", key, other, &body)),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, MetadataError> {
        let (status, body) = self.request(Method::DELETE, key, Bytes::new()).await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            other => Err(self.status_error("DELETE", key, other, &body)),
        }
    }

    fn describe(&self) -> String {
        format!("http metadata server {}", self.base)
    }
}
