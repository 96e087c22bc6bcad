//! The HTTP metadata server's sans-io core, `MetadataTable::handle`, driven by a sequence
//! of `TableRequest`s (GET / PUT / DELETE with any key, missing key or body) built from the
//! fuzz input, and checked against a plain `HashMap` model of Mooncake's rules
//! (`spec/transfer-engine-protocol.md` §5.2, duplicate `rpc_meta` refusal).
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mooncake_metadata::{MetadataTable, TableRequest};

#[derive(Debug, Arbitrary)]
enum Key {
    /// One of a few keys, so requests meet each other.
    Pool(u8),
    /// Anything, escaped on the wire and decoded with `keys::unescape` as the server does.
    Escaped(String),
    Raw(String),
    Missing,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Get(Key),
    Put(Key, Vec<u8>),
    PutSmall(Key, u8),
    Delete(Key),
}

const POOL: [&str; 6] = [
    "mooncake/ram/a",
    "mooncake/rpc_meta/a",
    "mooncake/ram/b",
    "mooncake/rpc_meta/b",
    "",
    "x/rpc_meta",
];

fn key(k: &Key) -> Option<String> {
    match k {
        Key::Pool(i) => Some(POOL[*i as usize % POOL.len()].to_owned()),
        Key::Escaped(s) => mooncake_metadata::keys::unescape(s),
        Key::Raw(s) => Some(s.clone()),
        Key::Missing => None,
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let table = MetadataTable::new();
    let mut model: HashMap<String, Bytes> = HashMap::new();
    for op in ops.iter().take(256) {
        let (req, k) = match op {
            Op::Get(k) => {
                let k = key(k);
                (TableRequest::Get { key: k.clone() }, k)
            }
            Op::Put(k, body) => {
                let k = key(k);
                let body = Bytes::from(body.clone());
                (TableRequest::Put { key: k.clone(), body }, k)
            }
            Op::PutSmall(k, b) => {
                let k = key(k);
                let body = Bytes::from(vec![b'0' + b % 3]);
                (TableRequest::Put { key: k.clone(), body }, k)
            }
            Op::Delete(k) => {
                let k = key(k);
                (TableRequest::Delete { key: k.clone() }, k)
            }
        };
        let reply = table.handle(req.clone());
        let k = k.filter(|k| !k.is_empty());
        match (&req, k) {
            (_, None) => assert_eq!(reply.status, 400),
            (TableRequest::Get { .. }, Some(k)) => match model.get(&k) {
                Some(v) => {
                    assert_eq!(reply.status, 200);
                    assert!(reply.json);
                    assert_eq!(&reply.body, v);
                }
                None => assert_eq!(reply.status, 404),
            },
            (TableRequest::Put { body, .. }, Some(k)) => {
                let dup = k.contains("rpc_meta") && model.get(&k).is_some_and(|v| v != body);
                if dup {
                    assert_eq!(reply.status, 400);
                } else {
                    assert_eq!(reply.status, 200);
                    model.insert(k, body.clone());
                }
            }
            (TableRequest::Delete { .. }, Some(k)) => {
                let had = model.remove(&k).is_some();
                assert_eq!(reply.status, if had { 200 } else { 404 });
            }
        }
        assert_eq!(table.len(), model.len());
        assert_eq!(table.is_empty(), model.is_empty());
    }
});
