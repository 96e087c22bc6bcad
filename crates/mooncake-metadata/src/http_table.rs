use bytes::Bytes;

use crate::MemoryStore;

/// One request to the HTTP metadata protocol, already decoded from HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableRequest {
    /// `GET /metadata?key=…`
    Get {
        /// The decoded key; `None` or empty when the parameter is missing.
        key: Option<String>,
    },
    /// `PUT /metadata?key=…` with the value as body.
    Put {
        /// The decoded key.
        key: Option<String>,
        /// The body, stored verbatim.
        body: Bytes,
    },
    /// `DELETE /metadata?key=…`
    Delete {
        /// The decoded key.
        key: Option<String>,
    },
}

/// The answer to a [`TableRequest`]: an HTTP status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReply {
    /// The HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Bytes,
    /// Whether the body is a stored JSON value (`Content-Type: application/json`) rather
    /// than a plain-text message.
    pub json: bool,
}

impl TableReply {
    fn text(status: u16, msg: &'static str) -> Self {
        Self {
            status,
            body: Bytes::from_static(msg.as_bytes()),
            json: false,
        }
    }
}

/// The sans-io core of the HTTP metadata server: Mooncake's status codes and bodies
/// (`spec/transfer-engine-protocol.md` §5.2) over an in-memory map.
///
/// One rule is Mooncake's own: a `PUT` of an existing `rpc_meta` key succeeds only with an
/// identical body (`metadata unchanged`); a different body is refused with 400, so two
/// engines cannot claim one segment name. The map is a [`MemoryStore`].
#[derive(Debug, Default)]
pub struct MetadataTable {
    store: MemoryStore,
}

fn usable(key: Option<String>) -> Option<String> {
    key.filter(|k| !k.is_empty())
}

impl MetadataTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Answers one request.
    pub fn handle(&self, request: TableRequest) -> TableReply {
        let missing = TableReply::text(400, "Missing key parameter");
        match request {
            TableRequest::Get { key } => {
                let Some(key) = usable(key) else {
                    return missing;
                };
                match self.store.value(&key) {
                    Some(body) => TableReply {
                        status: 200,
                        body,
                        json: true,
                    },
                    None => TableReply::text(404, "metadata not found"),
                }
            }
            TableRequest::Put { key, body } => {
                let Some(key) = usable(key) else {
                    return missing;
                };
                self.store.update(|map| {
                    if key.contains("rpc_meta") {
                        if let Some(old) = map.get(&key) {
                            if *old == body {
                                return TableReply::text(200, "metadata unchanged");
                            }
                            return TableReply::text(400, "Duplicate rpc_meta key not allowed");
                        }
                    }
                    map.insert(key, body);
                    TableReply::text(200, "metadata updated")
                })
            }
            TableRequest::Delete { key } => {
                let Some(key) = usable(key) else {
                    return missing;
                };
                match self.store.update(|m| m.remove(&key)) {
                    Some(_) => TableReply::text(200, "metadata deleted"),
                    None => TableReply::text(404, "metadata not found"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    mod decoders {
        use super::super::*;
        use crate::keys::{escape, unescape};
        use proptest::prelude::*;

        proptest! {
            /// Any request the HTTP server can build (any key, decoded or not, any body)
            /// gets an answer with a real status code, never a panic.
            #[test]
            fn any_request_gets_an_answer(
                ops in proptest::collection::vec(
                    (0u8..3, proptest::option::of(".{0,40}"), proptest::collection::vec(any::<u8>(), 0..64)),
                    0..32,
                ),
            ) {
                let t = MetadataTable::new();
                for (op, key, body) in ops {
                    let reply = match op {
                        0 => t.handle(TableRequest::Get { key }),
                        1 => t.handle(TableRequest::Put { key, body: Bytes::from(body) }),
                        _ => t.handle(TableRequest::Delete { key }),
                    };
                    prop_assert!((200..600).contains(&reply.status));
                }
            }

            /// Key escaping: any raw query value unescapes or is refused; any key survives
            /// escape then unescape.
            #[test]
            fn keys_escape_and_unescape(raw in ".{0,64}", key in ".{0,64}") {
                let _ = unescape(&raw);
                prop_assert_eq!(unescape(&escape(&key)), Some(key));
            }
        }
    }

    use super::*;

    fn get(t: &MetadataTable, k: &str) -> TableReply {
        t.handle(TableRequest::Get {
            key: Some(k.into()),
        })
    }
    fn put(t: &MetadataTable, k: &str, v: &'static str) -> TableReply {
        t.handle(TableRequest::Put {
            key: Some(k.into()),
            body: Bytes::from_static(v.as_bytes()),
        })
    }
    fn del(t: &MetadataTable, k: &str) -> TableReply {
        t.handle(TableRequest::Delete {
            key: Some(k.into()),
        })
    }

    #[test]
    fn answers_like_mooncake() {
        let t = MetadataTable::new();
        assert_eq!(get(&t, "a"), TableReply::text(404, "metadata not found"));
        assert_eq!(
            put(&t, "a", "{\"x\":1}"),
            TableReply::text(200, "metadata updated")
        );
        let r = get(&t, "a");
        assert_eq!(
            (r.status, &r.body[..], r.json),
            (200, &b"{\"x\":1}"[..], true)
        );
        assert_eq!(
            put(&t, "a", "not json"),
            TableReply::text(200, "metadata updated")
        );
        assert_eq!(&get(&t, "a").body[..], b"not json");
        assert_eq!(del(&t, "a"), TableReply::text(200, "metadata deleted"));
        assert_eq!(del(&t, "a"), TableReply::text(404, "metadata not found"));
    }

    #[test]
    fn missing_or_empty_key_is_400_for_every_method() {
        let t = MetadataTable::new();
        let missing = TableReply::text(400, "Missing key parameter");
        for key in [None, Some(String::new())] {
            assert_eq!(t.handle(TableRequest::Get { key: key.clone() }), missing);
            assert_eq!(
                t.handle(TableRequest::Put {
                    key: key.clone(),
                    body: Bytes::new()
                }),
                missing
            );
            assert_eq!(t.handle(TableRequest::Delete { key }), missing);
        }
        assert!(t.is_empty());
    }

    #[test]
    fn rpc_meta_keys_cannot_be_taken_over() {
        let t = MetadataTable::new();
        let k = "mooncake/rpc_meta/127.0.0.1:17101";
        assert_eq!(
            put(&t, k, "{\"rpc_port\":1}"),
            TableReply::text(200, "metadata updated")
        );
        assert_eq!(
            put(&t, k, "{\"rpc_port\":1}"),
            TableReply::text(200, "metadata unchanged")
        );
        assert_eq!(
            put(&t, k, "{\"rpc_port\":2}"),
            TableReply::text(400, "Duplicate rpc_meta key not allowed")
        );
        assert_eq!(&get(&t, k).body[..], b"{\"rpc_port\":1}");
        assert_eq!(del(&t, k).status, 200);
        assert_eq!(put(&t, k, "{\"rpc_port\":2}").status, 200);
    }
}
