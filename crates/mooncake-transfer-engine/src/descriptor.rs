//! Segment descriptors and RPC locations: Mooncake's JSON, same field names.
//!
//! Fields are declared in alphabetical order so serde writes them in the order jsoncpp
//! does; unknown fields are ignored on read; addresses are `u64`, never `f64`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::TransferError;

/// One published buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferDesc {
    /// Absolute virtual address in the owner process.
    pub addr: u64,
    /// Length in bytes.
    pub length: u64,
    /// RDMA local keys, one per device (empty for TCP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lkey: Vec<u32>,
    /// For TCP the segment name; for RDMA the location (`cpu:0`).
    pub name: String,
    /// RDMA remote keys, one per device (empty for TCP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rkey: Vec<u32>,
    /// Our extension: the shared-memory file behind the buffer, which same-host peers (same
    /// `shm_boot_id`) may map instead of using TCP. Absent otherwise; C++ readers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_path: Option<String>,
}

/// One RDMA device of a descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDesc {
    /// GID: 16 bytes as lowercase hex pairs joined by `:`.
    pub gid: String,
    /// LID (0 on RoCE).
    #[serde(default)]
    pub lid: u16,
    /// Device name, e.g. `mlx5_2`.
    pub name: String,
}

/// The descriptor an engine publishes under `mooncake/ram/<segment>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentDescriptor {
    /// Registered buffers.
    #[serde(default)]
    pub buffers: Vec<BufferDesc>,
    /// RDMA devices (absent for TCP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceDesc>,
    /// Segment name (= `local_server_name`).
    pub name: String,
    /// RDMA NIC preferences (kept verbatim, absent for TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_matrix: Option<serde_json::Value>,
    /// Transport: `tcp`, `rdma`, …
    pub protocol: String,
    /// Always written, empty for TCP (as the 0.3.13 wheel does).
    #[serde(default)]
    pub rdma_server_name: String,
    /// Our extension: the owner's kernel boot id, written when a buffer has a `shm_path`.
    /// A peer uses shared memory only if its own boot id is the same (the same host, not
    /// merely the same hostname).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_boot_id: Option<String>,
    /// Host of the TCP data listener; older engines omit it (then `rpc_meta` is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_data_host: Option<String>,
    /// Port of the TCP data listener.
    #[serde(default)]
    pub tcp_data_port: u16,
    /// TCP framing version: 2 = acknowledged; absent means 1.
    #[serde(default = "v1")]
    pub tcp_proto_version: u32,
    /// Publication time, `YYYY-MM-DD HH:MM:SS.ffffff` (ignored by readers).
    #[serde(default)]
    pub timestamp: String,
}

fn v1() -> u32 {
    1
}

/// The value of `mooncake/rpc_meta/<segment>`: where the handshake daemon listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcMeta {
    /// Host or IP; also the TCP data host when the descriptor has no `tcp_data_host`.
    pub ip_or_host_name: String,
    /// The handshake port.
    pub rpc_port: u16,
}

impl SegmentDescriptor {
    /// Compact JSON, keys in alphabetical order, no trailing newline (the HTTP form).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and validates a descriptor as the C++ reader does.
    pub fn from_json(segment: &str, bytes: &[u8]) -> Result<Self, TransferError> {
        let desc: Self =
            serde_json::from_slice(bytes).map_err(|e| TransferError::InvalidDescriptor {
                segment: segment.to_owned(),
                reason: format!("malformed JSON: {e}"),
            })?;
        desc.validate(segment)?;
        Ok(desc)
    }

    /// Mooncake's decoding rules: every buffer needs a name, a non-zero address and length;
    /// RDMA devices need a name and a GID; `rkey` and `lkey` have matching lengths.
    pub fn validate(&self, segment: &str) -> Result<(), TransferError> {
        let bad = |reason: String| TransferError::InvalidDescriptor {
            segment: segment.to_owned(),
            reason,
        };
        for (i, b) in self.buffers.iter().enumerate() {
            if b.name.is_empty() || b.addr == 0 || b.length == 0 {
                return Err(bad(format!(
                    "buffer {i} has an empty name, a zero address or a zero length"
                )));
            }
            if !b.rkey.is_empty() && b.rkey.len() != b.lkey.len() {
                return Err(bad(format!(
                    "buffer {i} has {} rkeys but {} lkeys",
                    b.rkey.len(),
                    b.lkey.len()
                )));
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            if d.name.is_empty() || d.gid.is_empty() {
                return Err(bad(format!("device {i} has an empty name or gid")));
            }
        }
        Ok(())
    }
}

impl RpcMeta {
    /// Compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses an `rpc_meta` value.
    pub fn from_json(segment: &str, bytes: &[u8]) -> Result<Self, TransferError> {
        serde_json::from_slice(bytes).map_err(|e| TransferError::InvalidDescriptor {
            segment: segment.to_owned(),
            reason: format!("malformed rpc_meta JSON: {e}"),
        })
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` in UTC for `now`.
pub fn timestamp(now: SystemTime) -> String {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHEEL: &str = r#"{"buffers":[{"addr":139677308416000,"length":1048576,"name":"127.0.0.1:17101"}],"name":"127.0.0.1:17101","protocol":"tcp","rdma_server_name":"","tcp_data_host":"127.0.0.1","tcp_data_port":15489,"tcp_proto_version":2,"timestamp":"2026-11-26 08:39:14.929789"}"#;

    #[test]
    fn wheel_descriptor_round_trips_byte_for_byte() {
        let d = SegmentDescriptor::from_json("s", WHEEL.as_bytes()).unwrap();
        assert_eq!(d.buffers[0].addr, 139_677_308_416_000);
        assert_eq!(d.tcp_data_host.as_deref(), Some("127.0.0.1"));
        assert_eq!(String::from_utf8(d.to_json()).unwrap(), WHEEL);
    }

    #[test]
    fn old_descriptors_default_to_v1_and_rpc_meta() {
        let d = SegmentDescriptor::from_json(
            "s",
            br#"{"buffers":[],"name":"s","protocol":"tcp","tcp_data_port":1,"extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!((d.tcp_proto_version, d.tcp_data_host), (1, None));
    }

    #[test]
    fn addresses_above_2_pow_53_stay_exact() {
        let json = br#"{"buffers":[{"addr":18446744073709551615,"length":1,"name":"n"}],"name":"n","protocol":"tcp"}"#;
        let d = SegmentDescriptor::from_json("n", json).unwrap();
        assert_eq!(d.buffers[0].addr, u64::MAX);
    }

    #[test]
    fn invalid_buffers_make_the_descriptor_unusable() {
        for buf in [
            r#"{"addr":0,"length":1,"name":"n"}"#,
            r#"{"addr":1,"length":0,"name":"n"}"#,
            r#"{"addr":1,"length":1,"name":""}"#,
            r#"{"addr":1,"length":1,"name":"n","rkey":[1],"lkey":[]}"#,
        ] {
            let json = format!(r#"{{"buffers":[{buf}],"name":"n","protocol":"tcp"}}"#);
            let err = SegmentDescriptor::from_json("n", json.as_bytes()).unwrap_err();
            assert!(
                matches!(err, TransferError::InvalidDescriptor { .. }),
                "{buf}: {err}"
            );
        }
        let err = SegmentDescriptor::from_json("n", b"{not json").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("segment \"n\" has an invalid descriptor: malformed JSON"));
    }

    #[test]
    fn rpc_meta_json_matches_mooncake() {
        let m = RpcMeta {
            ip_or_host_name: "127.0.0.1".into(),
            rpc_port: 15001,
        };
        assert_eq!(
            m.to_json(),
            br#"{"ip_or_host_name":"127.0.0.1","rpc_port":15001}"#
        );
    }

    #[test]
    fn timestamp_format() {
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_795_941_554_929_789);
        assert_eq!(timestamp(t), "2026-11-29 08:39:14.929789");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00.000000");
    }
}

#[cfg(test)]
mod fuzz_tests {
    proptest::proptest! {
        /// Descriptors come from the metadata service: any bytes parse or are refused,
        /// never a panic.
        #[test]
        fn any_descriptor_bytes_parse_or_are_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = super::SegmentDescriptor::from_json("peer", &bytes);
            let _ = super::RpcMeta::from_json("peer", &bytes);
        }

        #[test]
        fn any_descriptor_json_parses_or_is_refused(s in "\\{.{0,200}\\}") {
            let _ = super::SegmentDescriptor::from_json("peer", s.as_bytes());
        }
    }
}
