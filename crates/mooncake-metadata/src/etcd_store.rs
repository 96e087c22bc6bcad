use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::etcd_pb::etcdserverpb::kv_client::KvClient;
use crate::etcd_pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use crate::{MetadataError, MetadataStore, MetadataUri};

/// Largest gRPC message the client sends or accepts, as the C++ engine's etcd client
/// (`MaxCallSendMsgSize`/`MaxCallRecvMsgSize` in `mooncake-common/etcd/etcd_wrapper.go`).
const MAX_MESSAGE_SIZE: usize = 32 << 20;

/// Timeouts of [`EtcdStore`]; the defaults are those of the C++ engine's etcd client
/// (`DialTimeout` and the per-call context of `etcd_wrapper.go`, both 5 s).
#[derive(Debug, Clone)]
pub struct EtcdStoreConfig {
    /// Time allowed to open the TCP connection to one endpoint. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for one request to one endpoint, connection included. Default 5 s.
    pub request_timeout: Duration,
}

impl Default for EtcdStoreConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// A client of an etcd v3 cluster (gRPC `KV` service), storing keys the way the C++
/// engine does, so that C++ and Rust engines can share one etcd.
///
/// - **Keys** are the metadata keys verbatim (`mooncake/ram/<segment>`,
///   `mooncake/rpc_meta/<segment>`, see [`crate::keys`]): no extra prefix, no escaping.
/// - **Values** are the bytes given, stored as the etcd value with no lease. The C++
///   engine writes JSON text with jsoncpp's `FastWriter`, which ends it with `\n`; readers
///   of Mooncake values must therefore accept trailing whitespace (serde_json does).
/// - **Size**: a stock etcd server refuses requests over 1.5 MiB
///   (`--max-request-bytes`); a larger descriptor fails with [`MetadataError::Rejected`],
///   as it does for the C++ engine. The client itself accepts messages up to 32 MiB.
///
/// Requests go to one endpoint; when it cannot be reached (or has no leader) the next one
/// in the list is tried, and the one that answered is used first next time. When none
/// answers the error is [`MetadataError::Unreachable`] naming every endpoint.
/// Connections are opened lazily, on the first request.
#[derive(Debug)]
pub struct EtcdStore {
    endpoints: Vec<EtcdEndpoint>,
    /// Index of the endpoint that answered last.
    current: AtomicUsize,
    config: EtcdStoreConfig,
}

#[derive(Debug)]
struct EtcdEndpoint {
    /// `host:port` as given.
    addr: String,
    endpoint: Endpoint,
    /// Created on first use: a tonic channel needs a running tokio runtime.
    channel: OnceLock<Channel>,
}

impl EtcdStore {
    /// A client of the etcd cluster named by `uri`: `etcd://h1:2379;h2:2379` (`;` or `,`
    /// between endpoints) or a bare `h1:2379,h2:2379` list, as Mooncake takes them.
    pub fn new(uri: &str, config: EtcdStoreConfig) -> Result<Self, MetadataError> {
        let MetadataUri::Etcd { endpoints } = MetadataUri::parse(uri)? else {
            return Err(MetadataError::InvalidUri {
                input: uri.to_owned(),
                reason: "an etcd connection string is etcd://host:port[;host:port…]".to_owned(),
            });
        };
        Self::with_endpoints(&endpoints, config)
    }

    /// A client of the etcd cluster at `endpoints` (`host:port` each).
    pub fn with_endpoints(
        endpoints: &[String],
        config: EtcdStoreConfig,
    ) -> Result<Self, MetadataError> {
        let input = endpoints.join(",");
        if endpoints.is_empty() {
            return Err(MetadataError::InvalidUri {
                input,
                reason: "no etcd endpoint given".to_owned(),
            });
        }
        let endpoints = endpoints
            .iter()
            .map(|addr| {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| MetadataError::InvalidUri {
                        input: input.clone(),
                        reason: format!("etcd endpoint `{addr}`: {e}"),
                    })?
                    .connect_timeout(config.connect_timeout)
                    .tcp_nodelay(true);
                Ok(EtcdEndpoint {
                    addr: addr.clone(),
                    endpoint,
                    channel: OnceLock::new(),
                })
            })
            .collect::<Result<Vec<_>, MetadataError>>()?;
        Ok(Self {
            endpoints,
            current: AtomicUsize::new(0),
            config,
        })
    }

    /// The endpoints, `host:port` each.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.endpoints.iter().map(|e| e.addr.as_str())
    }

    /// `etcd://h1:p1,h2:p2`: the endpoints as one URL, for messages.
    pub(crate) fn describe_url(&self) -> String {
        self.url()
    }

    fn url(&self) -> String {
        let list: Vec<&str> = self.endpoints().collect();
        format!("etcd://{}", list.join(","))
    }

    /// Runs `call` against each endpoint in turn, starting with the one that answered
    /// last, until one answers.
    pub(crate) async fn call<T, F, Fut>(&self, call: F) -> Result<T, MetadataError>
    where
        F: Fn(KvClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_channel(|channel| {
            call(
                KvClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_SIZE)
                    .max_encoding_message_size(MAX_MESSAGE_SIZE),
            )
        })
        .await
    }

    /// Runs `call` on a channel to each endpoint in turn (see [`EtcdStore::call`]).
    pub(crate) async fn call_channel<T, F, Fut>(&self, call: F) -> Result<T, MetadataError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut failures = Vec::with_capacity(n);
        for i in (first..n).chain(0..first) {
            let endpoint = &self.endpoints[i];
            let channel = endpoint
                .channel
                .get_or_init(|| endpoint.endpoint.connect_lazy())
                .clone();
            match tokio::time::timeout(self.config.request_timeout, call(channel)).await {
                Ok(Ok(reply)) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(reply.into_inner());
                }
                Ok(Err(status)) if !is_unreachable(&status) => {
                    return Err(MetadataError::Rejected {
                        url: format!("etcd://{}", endpoint.addr),
                        reason: status_text(&status),
                    });
                }
                Ok(Err(status)) => {
                    failures.push(format!("{}: {}", endpoint.addr, status_text(&status)));
                }
                Err(_) => failures.push(format!(
                    "{}: no answer within {:?}",
                    endpoint.addr, self.config.request_timeout
                )),
            }
        }
        Err(MetadataError::Unreachable {
            url: self.url(),
            reason: failures.join("; "),
        })
    }
}

/// Whether a gRPC status means "this endpoint cannot serve now" (try the next one)
/// rather than "the cluster refused the request".
fn is_unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
    )
}

/// The status message with the chain of its transport causes ("connection refused").
fn status_text(status: &tonic::Status) -> String {
    let mut out = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

pub(crate) fn check_key(key: &str) -> Result<(), MetadataError> {
    if key.is_empty() {
        return Err(MetadataError::EmptyKey);
    }
    Ok(())
}

#[async_trait]
impl MetadataStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, MetadataError> {
        check_key(key)?;
        let reply = self
            .call(|mut kv| {
                let request = RangeRequest {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    ..RangeRequest::default()
                };
                async move { kv.range(request).await }
            })
            .await?;
        Ok(reply.kvs.into_iter().next().map(|kv| kv.value))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), MetadataError> {
        check_key(key)?;
        self.call(|mut kv| {
            let request = PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: value.clone(),
                ..PutRequest::default()
            };
            async move { kv.put(request).await }
        })
        .await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, MetadataError> {
        check_key(key)?;
        let reply = self
            .call(|mut kv| {
                let request = DeleteRangeRequest {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    ..DeleteRangeRequest::default()
                };
                async move { kv.delete_range(request).await }
            })
            .await?;
        Ok(reply.deleted > 0)
    }

    fn describe(&self) -> String {
        format!("etcd metadata store {}", self.url())
    }
}
