//! Transfer-engine metadata values, as read from the metadata service (any writer can
//! put anything there): `descriptor::SegmentDescriptor::from_json` (the value of
//! `mooncake/ram/<segment>`) and `descriptor::RpcMeta::from_json` (the value of
//! `mooncake/rpc_meta/<segment>`), plus `HandshakeAddr::parse` of the peer name.
//! Whatever parses must re-serialize and parse back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mooncake_transfer_engine::descriptor::{RpcMeta, SegmentDescriptor};
use mooncake_transfer_engine::HandshakeAddr;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = SegmentDescriptor::from_json("fuzz", data) {
        let json = d.to_json();
        let back = SegmentDescriptor::from_json("fuzz", &json)
            .expect("a descriptor we wrote must parse back");
        assert_eq!(back, d);
        d.validate("fuzz").expect("from_json validated it");
    }
    if let Ok(m) = RpcMeta::from_json("fuzz", data) {
        let back = RpcMeta::from_json("fuzz", &m.to_json()).expect("rpc_meta round trip");
        assert_eq!(back, m);
        let a = HandshakeAddr::parse(&m.ip_or_host_name);
        assert_ne!(a.port, 0);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let a = HandshakeAddr::parse(s);
        assert_ne!(a.port, 0, "a zero port is replaced by the default");
        assert!(s.contains(a.host.as_str()));
    }
});
