//! Mooncake's metadata key layout and the key escaping of its HTTP protocol.
//!
//! The prefix is `mooncake/`, or `mooncake/<cluster id>/` when a cluster id is set
//! (the C++ engine reads it from `MC_METADATA_CLUSTER_ID`; here it is passed in).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// The characters `curl_easy_escape` leaves alone are `A-Z a-z 0-9 - . _ ~`; every other
/// byte becomes `%XX` with uppercase hex, exactly as the C++ client sends keys.
const CURL_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Escapes a key for a query string the way the C++ client (`curl_easy_escape`) does.
pub fn escape(key: &str) -> String {
    percent_encoding::utf8_percent_encode(key, CURL_ESCAPE).to_string()
}

/// Decodes a percent-escaped query value. `+` stays `+` (curl escapes spaces as `%20`).
/// Returns `None` when the decoded bytes are not UTF-8.
pub fn unescape(value: &str) -> Option<String> {
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The key namespace of one Mooncake cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    prefix: String,
}

impl Default for KeySpace {
    fn default() -> Self {
        Self {
            prefix: "mooncake/".to_owned(),
        }
    }
}

impl KeySpace {
    /// The key space of a cluster id; an empty id is the default `mooncake/` space.
    pub fn with_cluster_id(cluster_id: &str) -> Self {
        if cluster_id.is_empty() {
            return Self::default();
        }
        let mut prefix = format!("mooncake/{cluster_id}");
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    /// The prefix every key of this space starts with (ends in `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of a segment descriptor: `<prefix>ram/<name>`, or `<prefix><name>` when the
    /// name contains a `/` (e.g. `nvmeof/...`), as Mooncake does.
    pub fn segment(&self, segment_name: &str) -> String {
        if segment_name.contains('/') {
            format!("{}{segment_name}", self.prefix)
        } else {
            format!("{}ram/{segment_name}", self.prefix)
        }
    }

    /// The key of a segment's RPC location: `<prefix>rpc_meta/<name>`.
    pub fn rpc_meta(&self, segment_name: &str) -> String {
        format!("{}rpc_meta/{segment_name}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_matches_curl() {
        assert_eq!(
            escape("mooncake/ram/127.0.0.1:17101"),
            "mooncake%2Fram%2F127.0.0.1%3A17101"
        );
        assert_eq!(escape("a b?c&d%e+f~g"), "a%20b%3Fc%26d%25e%2Bf~g");
        assert_eq!(escape("ü"), "%C3%BC");
    }

    #[test]
    fn unescape_inverts_escape() {
        for key in ["mooncake/ram/127.0.0.1:17101", "a b?c&d%e+f", "ü/ß", ""] {
            assert_eq!(unescape(&escape(key)).as_deref(), Some(key));
        }
        assert_eq!(unescape("a+b").as_deref(), Some("a+b"));
        assert_eq!(unescape("%FF"), None);
    }

    #[test]
    fn key_layout_matches_mooncake() {
        let ks = KeySpace::default();
        assert_eq!(
            ks.segment("127.0.0.1:17101"),
            "mooncake/ram/127.0.0.1:17101"
        );
        assert_eq!(ks.segment("nvmeof/node1"), "mooncake/nvmeof/node1");
        assert_eq!(
            ks.rpc_meta("127.0.0.1:17101"),
            "mooncake/rpc_meta/127.0.0.1:17101"
        );
        let a = KeySpace::with_cluster_id("clusterA");
        assert_eq!(a.segment("node01"), "mooncake/clusterA/ram/node01");
        assert_eq!(KeySpace::with_cluster_id("c/").prefix(), "mooncake/c/");
        assert_eq!(KeySpace::with_cluster_id(""), KeySpace::default());
    }
}
