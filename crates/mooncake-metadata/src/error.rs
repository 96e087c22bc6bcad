use std::time::Duration;

/// Errors of the metadata service, its clients and the connection-string parser.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MetadataError {
    /// The connection string could not be parsed.
    #[error("invalid metadata connection string {input:?}: {reason}")]
    InvalidUri {
        /// The string as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The connection string names a backend that this build does not contain.
    #[error(
        "the {backend} metadata backend is not compiled into this build \
         (cargo feature `{feature}` of mooncake-metadata); use an http:// metadata server"
    )]
    BackendNotCompiled {
        /// The backend named by the connection string (`etcd`, `redis`).
        backend: &'static str,
        /// The cargo feature that will provide it.
        feature: &'static str,
    },
    /// The connection string is valid but names a mode without a central store.
    #[error(
        "{mode} has no central metadata store: descriptors are exchanged over the handshake port"
    )]
    NoCentralStore {
        /// The mode, e.g. `P2PHANDSHAKE`.
        mode: &'static str,
    },
    /// A key was empty; every backend refuses empty keys, as Mooncake's server does.
    #[error("metadata key must not be empty")]
    EmptyKey,
    /// The metadata server could not be reached (connection refused, DNS failure, reset).
    #[error("metadata server {url} is unreachable: {reason}")]
    Unreachable {
        /// The request URL.
        url: String,
        /// The underlying error.
        reason: String,
    },
    /// The metadata server did not answer in time.
    #[error("metadata server {url} did not answer within {timeout:?}")]
    Timeout {
        /// The request URL.
        url: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The metadata server answered with a status other than 200 (or 404 for a missing key).
    #[error("metadata server {url} answered {method} with HTTP {status}: {body}")]
    Status {
        /// The request URL.
        url: String,
        /// The HTTP method.
        method: &'static str,
        /// The status code.
        status: u16,
        /// The response body, lossily decoded and truncated.
        body: String,
    },
}
