//! [`AuthToken`]: the optional shared secret of a cluster (`--auth_token`,
//! `MOONCAKE_AUTH_TOKEN`).
//!
//! Every process of a cluster that is given the same token presents it when it connects
//! (master RPC, writes to the HTTP metadata server, transfer-engine data connections,
//! the standalone socket) and requires it from its peers. C++ Mooncake peers cannot send
//! it, so it is off unless configured. It keeps strangers on the network from reading or
//! writing the cache; it is not encryption (the bytes still cross the wire in clear) and
//! it does not separate users who share the token.
//!
//! [`RedisCredentials`]: the login and database of a Redis metadata store, which the
//! C++ engine reads from `MC_REDIS_USERNAME`, `MC_REDIS_PASSWORD` and `MC_REDIS_DB_INDEX`.
//!
//! This is the crate's one module that reads the environment.

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

/// The variable the C++ engine reads the Redis user name from.
pub const REDIS_USERNAME_ENV: &str = "MC_REDIS_USERNAME";
/// The variable the C++ engine reads the Redis password from.
pub const REDIS_PASSWORD_ENV: &str = "MC_REDIS_PASSWORD";
/// The variable the C++ engine reads the Redis database index (0 to 255) from.
pub const REDIS_DB_INDEX_ENV: &str = "MC_REDIS_DB_INDEX";

/// Who a Redis metadata store logs in as and which database it selects.
///
/// The C++ engine takes these from the environment only ([`RedisCredentials::from_env`]);
/// a `redis://user:pass@host:port/db` URL overrides them part by part. `Debug` never
/// shows the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisCredentials {
    /// ACL user name (`AUTH <user> <password>`); `None` for the default user.
    pub username: Option<String>,
    /// Password (`AUTH [<user>] <password>`); `None` for no `AUTH`. As in the C++
    /// engine, a user name without a password sends no `AUTH`.
    pub password: Option<String>,
    /// Database index (`SELECT <db>`). Default 0.
    pub db: u8,
}

impl RedisCredentials {
    /// The credentials in `MC_REDIS_USERNAME`, `MC_REDIS_PASSWORD` and `MC_REDIS_DB_INDEX`,
    /// read as the C++ engine reads them: empty means unset, and a database index that is
    /// not a number from 0 to 255 is logged and replaced by 0.
    pub fn from_env() -> Self {
        let text = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let db = text(REDIS_DB_INDEX_ENV).map_or(0, |v| {
            parse_db_index(&v).unwrap_or_else(|e| {
                tracing::warn!("{REDIS_DB_INDEX_ENV} ignored, using database 0: {e}");
                0
            })
        });
        Self {
            username: text(REDIS_USERNAME_ENV),
            password: text(REDIS_PASSWORD_ENV),
            db,
        }
    }
}

/// A Redis database index from its text: a number from 0 to 255, as the C++ engine takes.
pub(crate) fn parse_db_index(text: &str) -> Result<u8, String> {
    text.trim()
        .parse::<u8>()
        .map_err(|_| format!("database index `{text}` is not a number from 0 to 255"))
}

impl fmt::Debug for RedisCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCredentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish()
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
        let c = RedisCredentials {
            username: Some("alice".into()),
            password: Some("s3cr3t".into()),
            db: 3,
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t") && shown.contains("alice"),
            "{shown}"
        );
    }

    #[test]
    fn db_index_is_a_number_from_0_to_255() {
        assert_eq!(parse_db_index("0"), Ok(0));
        assert_eq!(parse_db_index(" 255 "), Ok(255));
        for bad in ["256", "-1", "x", ""] {
            assert!(
                parse_db_index(bad).unwrap_err().contains("0 to 255"),
                "{bad}"
            );
        }
    }
}
