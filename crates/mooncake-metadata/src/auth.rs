//! [`AuthToken`]: the optional shared secret of a cluster (`--auth_token`,
//! `MOONCAKE_AUTH_TOKEN`).
//!
//! Every process of a cluster that is given the same token presents it when it connects
//! (master RPC, writes to the HTTP metadata server, transfer-engine data connections,
//! the standalone socket) and requires it from its peers. C++ Mooncake peers cannot send
//! it, so it is off unless configured. It keeps strangers on the network from reading or
//! writing the cache; it is not encryption (the bytes still cross the wire in clear) and
//! it does not separate users who share the token.

use std::fmt;

/// The environment variable every process reads its token from when no flag gives one.
pub const AUTH_TOKEN_ENV: &str = "MOONCAKE_AUTH_TOKEN";

/// Longest token accepted (it travels in one small frame).
pub const MAX_TOKEN_LEN: usize = 1024;

/// A shared secret. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl AuthToken {
    /// A token from its text; `None` when empty (no authentication). A token longer than
    /// [`MAX_TOKEN_LEN`] or with a character outside printable ASCII is an error, since it
    /// travels in frames and HTTP headers.
    pub fn new(text: &str) -> Result<Option<Self>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        if text.len() > MAX_TOKEN_LEN {
            return Err(format!(
                "auth token is {} bytes; at most {MAX_TOKEN_LEN} are accepted",
                text.len()
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("auth token must be printable ASCII without spaces".to_owned());
        }
        Ok(Some(Self(text.to_owned())))
    }

    /// The token in `MOONCAKE_AUTH_TOKEN`, if set, non-empty and valid (an invalid one is
    /// logged and ignored, so a process never silently uses half of it).
    pub fn from_env() -> Option<Self> {
        let text = std::env::var(AUTH_TOKEN_ENV).ok()?;
        match Self::new(&text) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("{AUTH_TOKEN_ENV} ignored: {e}");
                None
            }
        }
    }

    /// The token's bytes, to send to a peer.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The token's text, to send to a peer.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `Authorization` header value that presents this token (`Bearer <token>`).
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// The token of an `Authorization: Bearer <token>` header value, if it is one.
    pub fn from_bearer(value: &[u8]) -> Option<&[u8]> {
        value.strip_prefix(b"Bearer ")
    }

    /// Whether `presented` is this token, in time that depends only on the lengths (a
    /// peer cannot find the token byte by byte by timing refusals).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        let mut diff = ours.len() ^ presented.len();
        for (i, b) in presented.iter().enumerate() {
            diff |= usize::from(b ^ ours.get(i % ours.len().max(1)).copied().unwrap_or(0));
        }
        diff == 0
    }

    /// Whether an optional presented token satisfies an optional required one: nothing
    /// required always passes; a requirement needs the same token.
    pub fn admits(required: Option<&Self>, presented: Option<&[u8]>) -> bool {
        match (required, presented) {
            (None, _) => true,
            (Some(t), Some(p)) => t.matches(p),
            (Some(_), None) => false,
        }
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_none_and_bad_text_is_refused() {
        assert_eq!(AuthToken::new("").unwrap(), None);
        assert!(AuthToken::new("has space")
            .unwrap_err()
            .contains("printable"));
        assert!(AuthToken::new(&"x".repeat(MAX_TOKEN_LEN + 1))
            .unwrap_err()
            .contains("at most 1024"));
        assert!(AuthToken::new("s3cr3t!").unwrap().is_some());
    }

    #[test]
    fn only_the_same_token_matches() {
        let t = AuthToken::new("s3cr3t").unwrap().unwrap();
        assert!(t.matches(b"s3cr3t"));
        for wrong in [&b""[..], b"s3cr3", b"s3cr3t!", b"S3cr3t", b"s3cr3ts3cr3t"] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert!(AuthToken::admits(None, None));
        assert!(AuthToken::admits(None, Some(b"anything")));
        assert!(!AuthToken::admits(Some(&t), None));
        assert!(AuthToken::admits(Some(&t), Some(b"s3cr3t")));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = AuthToken::new("s3cr3t").unwrap().unwrap();
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }
}
