//! `P2PHANDSHAKE` mode: no central metadata store. Each engine is named `<host>:<rpc port>`
//! and serves its own descriptor on the handshake port; a peer's descriptor is fetched
//! from the peer itself (a Metadata frame), and its `rpc_meta` follows from its name.
//!
//! [`P2pMetadata`] plays the metadata store for one engine: writes of its own keys stay
//! local (the descriptor is handed to the handshake daemon), reads of other keys go to the
//! peer named in the key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use mooncake_metadata::{MetadataError, MetadataStore};
use parking_lot::Mutex;

use crate::descriptor::RpcMeta;
use crate::handshake::{self, HandshakeState};

/// How long fetching a peer's descriptor may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// The metadata store of an engine in `P2PHANDSHAKE` mode.
#[derive(Debug)]
pub(crate) struct P2pMetadata {
    own: String,
    handshake: Arc<HandshakeState>,
    local: Mutex<HashMap<String, Bytes>>,
}

/// `(kind, segment)` of a Mooncake key: `…/ram/<segment>` or `…/rpc_meta/<segment>`.
fn split_key(key: &str) -> Option<(&'static str, &str)> {
    for kind in ["rpc_meta", "ram"] {
        let marker = format!("/{kind}/");
        if let Some(i) = key.find(&marker) {
            let kind = if kind == "ram" { "ram" } else { "rpc_meta" };
            return Some((kind, &key[i + marker.len()..]));
        }
    }
    None
}

impl P2pMetadata {
    /// The store of the engine named `own` (`<host>:<rpc port>`), whose handshake daemon
    /// serves `handshake`'s descriptor.
    pub(crate) fn new(own: String, handshake: Arc<HandshakeState>) -> Self {
        Self {
            own,
            handshake,
            local: Mutex::new(HashMap::new()),
        }
    }

    fn unreachable(&self, segment: &str, reason: String) -> MetadataError {
        MetadataError::Unreachable {
            url: format!("P2PHANDSHAKE {segment}"),
            reason,
        }
    }
}

#[async_trait]
impl MetadataStore for P2pMetadata {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, MetadataError> {
        if key.is_empty() {
            return Err(MetadataError::EmptyKey);
        }
        if let Some(v) = self.local.lock().get(key) {
            return Ok(Some(v.clone()));
        }
        let Some((kind, segment)) = split_key(key) else {
            return Ok(None);
        };
        if segment == self.own {
            return Ok(None);
        }
        let Some((host, port)) = segment
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        else {
            return Err(self.unreachable(
                segment,
                "in P2PHANDSHAKE mode a segment is named <host>:<rpc port>".into(),
            ));
        };
        if kind == "rpc_meta" {
            let meta = RpcMeta {
                ip_or_host_name: host.to_owned(),
                rpc_port: port,
            };
            return Ok(Some(Bytes::from(meta.to_json())));
        }
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| self.unreachable(segment, e.to_string()))?
            .next()
            .ok_or_else(|| self.unreachable(segment, "no address".into()))?;
        let own = self.handshake.descriptor().unwrap_or_else(|| "{}".into());
        match handshake::fetch_metadata(addr, &own, FETCH_TIMEOUT).await {
            Ok(desc) => Ok(desc.map(Bytes::from)),
            Err(e) => Err(self.unreachable(segment, e.to_string())),
        }
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), MetadataError> {
        if key.is_empty() {
            return Err(MetadataError::EmptyKey);
        }
        if let Some(("ram", segment)) = split_key(key) {
            if segment == self.own {
                self.handshake
                    .set_descriptor(Some(String::from_utf8_lossy(&value).into_owned()));
            }
        }
        self.local.lock().insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, MetadataError> {
        if key.is_empty() {
            return Err(MetadataError::EmptyKey);
        }
        if let Some(("ram", segment)) = split_key(key) {
            if segment == self.own {
                self.handshake.set_descriptor(None);
            }
        }
        Ok(self.local.lock().remove(key).is_some())
    }

    fn describe(&self) -> String {
        format!("P2PHANDSHAKE ({})", self.own)
    }
}

#[cfg(test)]
mod tests {
    use super::{split_key, HandshakeState, P2pMetadata};
    use std::sync::Arc;

    /// The conformance suite every metadata store passes. Keys of other segments would be
    /// fetched from those peers; the suite's segment keys name this engine itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conforms_to_the_metadata_suite() {
        let handshake = Arc::new(HandshakeState::new());
        let store = P2pMetadata::new("127.0.0.1:17101".into(), handshake.clone());
        mooncake_metadata::testing::Suite::test_all(Arc::new(store)).await;
        assert_eq!(
            handshake.descriptor(),
            None,
            "the suite deleted its descriptor"
        );
    }

    #[test]
    fn keys_name_their_segment() {
        assert_eq!(
            split_key("mooncake/ram/10.0.0.1:15001"),
            Some(("ram", "10.0.0.1:15001"))
        );
        assert_eq!(
            split_key("mooncake/c1/rpc_meta/h:1"),
            Some(("rpc_meta", "h:1"))
        );
        assert_eq!(split_key("other"), None);
    }
}
