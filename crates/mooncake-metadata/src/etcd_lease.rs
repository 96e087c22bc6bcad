//! Leases and create-if-absent writes on etcd: what a master needs to elect a leader on
//! the key `mooncake-store/<cluster_id>/master_view` (`store-semantics.md` §5).
//!
//! Every call goes through [`EtcdStore`]'s endpoint failover, with its per-request
//! timeout. Keep-alive opens one `LeaseKeepAlive` stream per renewal: a renewal every
//! second or so is cheap, and a stream per call has no state to repair after an etcd
//! member fails.

use std::time::Duration;

use bytes::Bytes;
use tokio_stream::StreamExt;

use crate::etcd_pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::etcd_pb::etcdserverpb::lease_client::LeaseClient;
use crate::etcd_pb::etcdserverpb::request_op::Request as Op;
use crate::etcd_pb::etcdserverpb::response_op::Response as OpAnswer;
use crate::etcd_pb::etcdserverpb::{
    kv_client::KvClient, Compare, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::etcd_store::check_key;
use crate::{EtcdStore, MetadataError};

/// An etcd lease.
pub type LeaseId = i64;

/// A key's value with the revision that created it and the lease it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// The etcd revision that created the key (Mooncake's view version of a master view).
    pub create_revision: i64,
    /// The lease the key lives on (0: none).
    pub lease: LeaseId,
}

impl EtcdStore {
    /// Grants a lease of `ttl` (whole seconds, at least one): the lease and the TTL etcd
    /// granted (it may raise a short one to its minimum).
    pub async fn grant_lease(&self, ttl: Duration) -> Result<(LeaseId, Duration), MetadataError> {
        let ttl = ttl.as_secs().max(1) as i64;
        let reply = self
            .call_channel(|channel| async move {
                LeaseClient::new(channel)
                    .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                    .await
            })
            .await?;
        if !reply.error.is_empty() {
            return Err(MetadataError::Rejected {
                url: self.describe_url(),
                reason: format!("lease grant: {}", reply.error),
            });
        }
        Ok((reply.id, Duration::from_secs(reply.ttl.max(0) as u64)))
    }

    /// Renews `lease` once. `Some(ttl)`: renewed, it now lives `ttl` from etcd's
    /// reception of the request; `None`: the lease has expired (or was revoked).
    pub async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, MetadataError> {
        let reply = self
            .call_channel(|channel| async move {
                // The request stream stays open until the answer is in: some servers end
                // the exchange as soon as the client's side closes.
                let requests = tokio_stream::once(LeaseKeepAliveRequest { id: lease })
                    .chain(tokio_stream::pending());
                let mut answers = LeaseClient::new(channel)
                    .lease_keep_alive(requests)
                    .await?
                    .into_inner();
                match answers.message().await? {
                    Some(answer) => Ok(tonic::Response::new(answer)),
                    None => Err(tonic::Status::unavailable(
                        "the keep-alive stream ended without an answer",
                    )),
                }
            })
            .await?;
        Ok((reply.ttl > 0).then(|| Duration::from_secs(reply.ttl as u64)))
    }

    /// Revokes `lease`: every key attached to it is deleted at once.
    pub async fn revoke_lease(&self, lease: LeaseId) -> Result<(), MetadataError> {
        self.call_channel(|channel| async move {
            LeaseClient::new(channel)
                .lease_revoke(LeaseRevokeRequest { id: lease })
                .await
        })
        .await?;
        Ok(())
    }

    /// Creates `key` = `value` on `lease` if the key does not exist, in one transaction.
    /// `Ok(revision)`: created at that revision; `Err(current)`: the key exists.
    pub async fn create_with_lease(
        &self,
        key: &str,
        value: Bytes,
        lease: LeaseId,
    ) -> Result<Result<i64, Versioned>, MetadataError> {
        check_key(key)?;
        let key_bytes = Bytes::copy_from_slice(key.as_bytes());
        let reply = self
            .call(|mut kv: KvClient<_>| {
                let request = TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Create as i32,
                        key: key_bytes.clone(),
                        range_end: Bytes::new(),
                        target_union: Some(TargetUnion::CreateRevision(0)),
                    }],
                    success: vec![RequestOp {
                        request: Some(Op::RequestPut(PutRequest {
                            key: key_bytes.clone(),
                            value: value.clone(),
                            lease,
                            ..PutRequest::default()
                        })),
                    }],
                    failure: vec![RequestOp {
                        request: Some(Op::RequestRange(RangeRequest {
                            key: key_bytes.clone(),
                            ..RangeRequest::default()
                        })),
                    }],
                };
                async move { kv.txn(request).await }
            })
            .await?;
        if reply.succeeded {
            return Ok(Ok(reply.header.map_or(0, |h| h.revision)));
        }
        let current = reply.responses.into_iter().find_map(|r| match r.response {
            Some(OpAnswer::ResponseRange(range)) => range.kvs.into_iter().next(),
            _ => None,
        });
        match current {
            Some(kv) => Ok(Err(Versioned {
                value: kv.value,
                create_revision: kv.create_revision,
                lease: kv.lease,
            })),
            // Deleted between the compare and the read (its lease just expired): the
            // caller tries again.
            None => Ok(Err(Versioned {
                value: Bytes::new(),
                create_revision: 0,
                lease: 0,
            })),
        }
    }

    /// Writes `key` = `value` attached to `lease` (deleted with it).
    pub async fn put_with_lease(
        &self,
        key: &str,
        value: Bytes,
        lease: LeaseId,
    ) -> Result<(), MetadataError> {
        check_key(key)?;
        let key_bytes = Bytes::copy_from_slice(key.as_bytes());
        self.call(|mut kv: KvClient<_>| {
            let request = PutRequest {
                key: key_bytes.clone(),
                value: value.clone(),
                lease,
                ..PutRequest::default()
            };
            async move { kv.put(request).await }
        })
        .await?;
        Ok(())
    }

    /// Every key starting with `prefix`, with its value, in key order.
    pub async fn list_prefix(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, MetadataError> {
        check_key(prefix)?;
        let key_bytes = Bytes::copy_from_slice(prefix.as_bytes());
        // The range [prefix, prefix with its last byte + 1).
        let mut end = prefix.as_bytes().to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                break;
            }
        }
        let range_end = Bytes::from(end);
        let reply = self
            .call(|mut kv: KvClient<_>| {
                let request = RangeRequest {
                    key: key_bytes.clone(),
                    range_end: range_end.clone(),
                    ..RangeRequest::default()
                };
                async move { kv.range(request).await }
            })
            .await?;
        Ok(reply
            .kvs
            .into_iter()
            .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.value))
            .collect())
    }

    /// `key`'s value with its creation revision and lease, if it exists.
    pub async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>, MetadataError> {
        check_key(key)?;
        let key_bytes = Bytes::copy_from_slice(key.as_bytes());
        let reply = self
            .call(|mut kv: KvClient<_>| {
                let request = RangeRequest {
                    key: key_bytes.clone(),
                    ..RangeRequest::default()
                };
                async move { kv.range(request).await }
            })
            .await?;
        Ok(reply.kvs.into_iter().next().map(|kv| Versioned {
            value: kv.value,
            create_revision: kv.create_revision,
            lease: kv.lease,
        }))
    }
}
