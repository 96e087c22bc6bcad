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
        /// The request URL, or the server (`etcd://h1:p1,h2:p2`, `redis://h:p`).
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
    /// The metadata server answered but refused the request (an etcd or Redis error reply:
    /// value too large, wrong password, unknown database).
    #[error("metadata server {url} refused the request: {reason}")]
    Rejected {
        /// The server (`etcd://h:p`, `redis://h:p`).
        url: String,
        /// The server's error message.
        reason: String,
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
