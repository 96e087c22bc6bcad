use std::net::SocketAddr;
use std::time::Duration;

use mooncake_metadata::MetadataError;

/// Errors of the transfer engine. [`TransferError::code`] maps each to Mooncake's status
/// code (`include/common/base/status.h`), the one place where that mapping lives.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// An argument is invalid (empty name, zero-length registration, unknown handle).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A submit would exceed the batch's capacity.
    #[error("batch holds {capacity} requests; submitting {requested} more exceeds it")]
    TooManyRequests {
        /// Capacity given at allocation.
        capacity: usize,
        /// Requests already in the batch plus the new ones.
        requested: usize,
    },
    /// A local range is not inside one registered buffer (or an unregister names an
    /// address that was never registered).
    #[error("local range {addr:#x}+{len} is not inside a registered buffer")]
    AddressNotRegistered {
        /// Start address.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// A batch was freed before every task was observed terminal.
    #[error("batch {0} still has tasks that were not observed complete")]
    BatchBusy(u64),
    /// A registration overlaps an existing one.
    #[error("buffer {addr:#x}+{len} overlaps a registered buffer")]
    AddressOverlapped {
        /// Start address.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The peer's descriptor names a transport this build does not have.
    #[error("segment {segment} uses transport {protocol:?}, which this engine does not support")]
    NotSupportedTransport {
        /// The segment name.
        segment: String,
        /// The descriptor's `protocol`.
        protocol: String,
    },
    /// The metadata service failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// No descriptor is published for the segment.
    #[error("segment {0:?} is not published in the metadata service")]
    SegmentNotFound(String),
    /// The published descriptor cannot be used.
    #[error("segment {segment:?} has an invalid descriptor: {reason}")]
    InvalidDescriptor {
        /// The segment name.
        segment: String,
        /// What is wrong.
        reason: String,
    },
    /// A socket could not be bound or connected, or failed mid-transfer.
    #[error("tcp {what} with {peer} failed: {source}")]
    Io {
        /// The peer (or local listener) address.
        peer: SocketAddr,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The peer refused the remote range (outside its registered buffers).
    #[error("peer {peer} rejected remote range {addr:#x}+{len}: not inside one of its registered buffers")]
    Rejected {
        /// The peer.
        peer: SocketAddr,
        /// Remote start address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// The peer refused this engine's token (or needs one and none is configured), or,
    /// being a C++ engine, does not take tokens at all.
    #[error("authentication failed with peer {peer}: {reason}")]
    Unauthenticated {
        /// The peer.
        peer: SocketAddr,
        /// What the peer said.
        reason: &'static str,
    },
    /// The peer sent bytes that are not a valid status frame.
    #[error(
        "peer {peer} sent an invalid status frame {frame:02x?} (a v1 peer or a stream out of sync)"
    )]
    BadStatus {
        /// The peer.
        peer: SocketAddr,
        /// The 8 bytes received.
        frame: [u8; 8],
    },
    /// The peer did not make progress in time.
    #[error("peer {peer} did not answer within {timeout:?}")]
    Timeout {
        /// The peer.
        peer: SocketAddr,
        /// The time allowed.
        timeout: Duration,
    },
    /// [`crate::TransferEngine::unregister`] gave up waiting for transfers still using the
    /// buffer; it stays registered, and its memory must not be freed yet.
    #[error("buffer {addr:#x} is still used by {in_flight} transfer(s) after {timeout:?}; it stays registered (do not free it yet)")]
    BufferBusy {
        /// The buffer's start.
        addr: u64,
        /// Transfers (or other holders) still using it.
        in_flight: usize,
        /// The time waited.
        timeout: Duration,
    },
    /// The engine is shutting down.
    #[error("the transfer engine is shut down")]
    Shutdown,
}

impl TransferError {
    /// Mooncake's numeric status code, negated as the integer API returns it
    /// (e.g. `-200` for metadata errors).
    pub fn code(&self) -> i32 {
        match self {
            TransferError::InvalidArgument(_) => -1,
            TransferError::TooManyRequests { .. } => -2,
            TransferError::AddressNotRegistered { .. } | TransferError::Rejected { .. } => -3,
            TransferError::BatchBusy(_) | TransferError::BufferBusy { .. } => -4,
            TransferError::AddressOverlapped { .. } => -7,
            TransferError::NotSupportedTransport { .. } => -8,
            TransferError::InvalidDescriptor { .. } => -103,
            TransferError::Io { .. }
            | TransferError::BadStatus { .. }
            | TransferError::Timeout { .. }
            | TransferError::Unauthenticated { .. } => -102,
            TransferError::Metadata(_) | TransferError::SegmentNotFound(_) => -200,
            TransferError::Shutdown => -202,
        }
    }
}
