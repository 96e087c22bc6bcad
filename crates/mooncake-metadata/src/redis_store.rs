use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError};
use tokio::sync::OnceCell;

use crate::auth::parse_db_index;
use crate::{MetadataError, MetadataStore, RedisCredentials};

/// The port of a `redis://host` URL without one (Redis's own default; the C++ engine
/// has no Redis default and would use its handshake port, so always give one to it).
pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// Credentials and timeouts of [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    /// Login and database; the parts a `redis://user:pass@h:p/db` URL gives override
    /// these. Fill it with [`RedisCredentials::from_env`] to behave as the C++ engine.
    /// Default: no `AUTH`, database 0.
    pub credentials: RedisCredentials,
    /// Time allowed to connect (and log in). Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for one command. Default 5 s.
    pub request_timeout: Duration,
}

impl Default for RedisStoreConfig {
    fn default() -> Self {
        Self {
            credentials: RedisCredentials::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// A client of a Redis server, storing keys the way the C++ engine does
/// (`RedisStoragePlugin` in `transfer_metadata_plugin.cpp`), so that C++ and Rust
/// engines can share one Redis.
///
/// - **Keys** are the metadata keys verbatim (`mooncake/ram/<segment>`,
///   `mooncake/rpc_meta/<segment>`, see [`crate::keys`]) as plain Redis strings: `GET`,
///   `SET` (no expiry) and `DEL`. No extra prefix, no hashes.
/// - **Values** are the bytes given. The C++ engine writes JSON text with jsoncpp's
///   `FastWriter`, which ends it with `\n`; readers of Mooncake values must therefore
///   accept trailing whitespace (serde_json does).
/// - **Login**: `AUTH [<user>] <password>` when a password is set, then `SELECT <db>`,
///   as the C++ engine does with `MC_REDIS_USERNAME`, `MC_REDIS_PASSWORD` and
///   `MC_REDIS_DB_INDEX`.
///
/// One multiplexed connection is opened on the first request and re-opened after a
/// failure. A server that cannot be reached is [`MetadataError::Unreachable`] within
/// the connect timeout; an error reply (wrong password, unknown database) is
/// [`MetadataError::Rejected`].
#[derive(Debug)]
pub struct RedisStore {
    /// `redis://host:port/db`, without credentials, for messages.
    url: String,
    info: ConnectionInfo,
    config: RedisStoreConfig,
    /// Created on first use: the manager needs a running tokio runtime.
    connection: OnceCell<ConnectionManager>,
}

/// The parts of a `redis://[user[:password]@]host[:port][/db]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedisUrl {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) db: Option<u8>,
}

impl RedisUrl {
    /// Parses a `redis://` URL; the error says what is wrong (the caller names the input).
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("a redis URL starts with redis://")?;
        if scheme.eq_ignore_ascii_case("rediss") {
            return Err(
                "rediss:// (TLS) is not supported: this build has no TLS; use redis://".into(),
            );
        }
        if !scheme.eq_ignore_ascii_case("redis") {
            return Err("a redis URL starts with redis://".into());
        }
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = split_host_port(authority)?;
        let db = match path {
            "" => None,
            db => Some(parse_db_index(db)?),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                (decode(user)?, decode(pass)?)
            }
        };
        Ok(Self {
            host,
            port,
            username,
            password,
            db,
        })
    }
}

fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or("the IPv6 host has no closing `]`")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the redis URL has no host".into());
    }
    let port = match port {
        None => DEFAULT_REDIS_PORT,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("the port `{p}` is not a number from 0 to 65535"))?,
    };
    Ok((host.to_owned(), port))
}

/// A percent-decoded URL user or password; empty is none.
fn decode(part: &str) -> Result<Option<String>, String> {
    if part.is_empty() {
        return Ok(None);
    }
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| Some(s.into_owned()))
        .map_err(|_| "the user or password is not UTF-8 once percent-decoded".to_owned())
}

impl RedisStore {
    /// A client of the Redis server at `url` (`redis://[user:pass@]host[:port][/db]`).
    /// No connection is made until the first request.
    pub fn new(url: &str, config: RedisStoreConfig) -> Result<Self, MetadataError> {
        let parsed = RedisUrl::parse(url).map_err(|reason| MetadataError::InvalidUri {
            input: crate::uri::redact(url),
            reason,
        })?;
        let creds = &config.credentials;
        let username = parsed.username.or_else(|| creds.username.clone());
        let password = parsed.password.or_else(|| creds.password.clone());
        let db = parsed.db.unwrap_or(creds.db);
        let mut settings = ConnectionAddr::Tcp(parsed.host.clone(), parsed.port)
            .into_connection_info()
            .map_err(|e| MetadataError::InvalidUri {
                input: url.to_owned(),
                reason: e.to_string(),
            })?
            .redis_settings()
            .clone()
            .set_db(i64::from(db));
        // As the C++ engine: no password, no AUTH (a lone user name is not sent).
        if let Some(password) = password {
            settings = settings.set_password(password);
            if let Some(username) = username {
                settings = settings.set_username(username);
            }
        }
        let host = if parsed.host.contains(':') {
            format!("[{}]", parsed.host)
        } else {
            parsed.host.clone()
        };
        let info = ConnectionAddr::Tcp(parsed.host, parsed.port)
            .into_connection_info()
            .map_err(|e| MetadataError::InvalidUri {
                input: url.to_owned(),
                reason: e.to_string(),
            })?
            .set_redis_settings(settings);
        Ok(Self {
            url: format!("redis://{host}:{}/{db}", parsed.port),
            info,
            config,
            connection: OnceCell::new(),
        })
    }

    /// The server as `redis://host:port/db` (credentials left out).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The shared connection, opened (and logged in) on first use.
    async fn connection(&self) -> Result<ConnectionManager, MetadataError> {
        let connect = || async {
            let client = redis::Client::open(self.info.clone()).map_err(|e| self.error(&e))?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.config.connect_timeout))
                .set_response_timeout(Some(self.config.request_timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(500));
            let opened = ConnectionManager::new_with_config(client, manager_config);
            // The manager bounds each attempt; this bounds its retries too.
            let limit = self.config.connect_timeout * 2;
            match tokio::time::timeout(limit, opened).await {
                Ok(Ok(manager)) => Ok(manager),
                Ok(Err(e)) => Err(self.error(&e)),
                Err(_) => Err(MetadataError::Unreachable {
                    url: self.url.clone(),
                    reason: format!("no connection within {limit:?}"),
                }),
            }
        };
        self.connection.get_or_try_init(connect).await.cloned()
    }

    /// Runs one command with the request timeout.
    async fn run<T>(
        &self,
        command: impl AsyncFnOnce(&mut ConnectionManager) -> Result<T, RedisError>,
    ) -> Result<T, MetadataError> {
        let mut connection = self.connection().await?;
        match tokio::time::timeout(self.config.request_timeout, command(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.error(&e)),
            Err(_) => Err(MetadataError::Timeout {
                url: self.url.clone(),
                timeout: self.config.request_timeout,
            }),
        }
    }

    /// Maps a client error: a failure to reach the server, or the server's refusal.
    fn error(&self, e: &RedisError) -> MetadataError {
        if e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
        {
            MetadataError::Unreachable {
                url: self.url.clone(),
                reason: e.to_string(),
            }
        } else {
            MetadataError::Rejected {
                url: self.url.clone(),
                reason: e.to_string(),
            }
        }
    }
}

fn check_key(key: &str) -> Result<(), MetadataError> {
    if key.is_empty() {
        return Err(MetadataError::EmptyKey);
    }
    Ok(())
}

#[async_trait]
impl MetadataStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, MetadataError> {
        check_key(key)?;
        let value: Option<Vec<u8>> = self.run(async |c| c.get(key).await).await?;
        Ok(value.map(Bytes::from))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), MetadataError> {
        check_key(key)?;
        self.run(async |c| c.set::<_, _, ()>(key, value.as_ref()).await)
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool, MetadataError> {
        check_key(key)?;
        let deleted: u64 = self.run(async |c| c.del(key).await).await?;
        Ok(deleted > 0)
    }

    fn describe(&self) -> String {
        format!("redis metadata store {}", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16) -> RedisUrl {
        RedisUrl {
            host: host.into(),
            port,
            username: None,
            password: None,
            db: None,
        }
    }

    #[test]
    fn parses_mooncake_and_url_forms() {
        assert_eq!(
            RedisUrl::parse("redis://127.0.0.1:6379").unwrap(),
            url("127.0.0.1", 6379)
        );
        assert_eq!(RedisUrl::parse("redis://r").unwrap(), url("r", 6379));
        assert_eq!(
            RedisUrl::parse("redis://[::1]:7000/").unwrap(),
            url("::1", 7000)
        );
        assert_eq!(
            RedisUrl::parse("redis://alice:p%40ss:w@h:1/3").unwrap(),
            RedisUrl {
                username: Some("alice".into()),
                password: Some("p@ss:w".into()),
                db: Some(3),
                ..url("h", 1)
            }
        );
        assert_eq!(
            RedisUrl::parse("redis://:secret@h:1").unwrap(),
            RedisUrl {
                password: Some("secret".into()),
                ..url("h", 1)
            }
        );
    }

    #[test]
    fn malformed_urls_name_the_problem() {
        let reason = |u: &str| RedisUrl::parse(u).unwrap_err();
        assert!(reason("rediss://h:1").contains("no TLS"));
        assert_eq!(reason("redis://"), "the redis URL has no host");
        assert_eq!(reason("redis://:1"), "the redis URL has no host");
        assert_eq!(
            reason("redis://h:port"),
            "the port `port` is not a number from 0 to 65535"
        );
        assert_eq!(
            reason("redis://h:1/256"),
            "database index `256` is not a number from 0 to 255"
        );
        assert_eq!(reason("redis://[::1:1"), "the IPv6 host has no closing `]`");
    }

    #[test]
    fn url_credentials_override_the_config_and_are_never_shown() {
        let config = RedisStoreConfig {
            credentials: RedisCredentials {
                username: Some("env-user".into()),
                password: Some("env-pass".into()),
                db: 2,
            },
            ..RedisStoreConfig::default()
        };
        let store = RedisStore::new("redis://:url-pass@h:1", config.clone()).unwrap();
        let settings = store.info.redis_settings();
        assert_eq!(settings.password(), Some("url-pass"));
        assert_eq!(settings.username(), Some("env-user"));
        assert_eq!(settings.db(), 2);
        assert_eq!(store.url(), "redis://h:1/2");
        assert!(!store.describe().contains("pass"));
        let store = RedisStore::new("redis://h:1/5", config).unwrap();
        assert_eq!(store.info.redis_settings().password(), Some("env-pass"));
        assert_eq!(store.info.redis_settings().db(), 5);
        let lone_user = RedisStoreConfig {
            credentials: RedisCredentials {
                username: Some("u".into()),
                ..RedisCredentials::default()
            },
            ..RedisStoreConfig::default()
        };
        let store = RedisStore::new("redis://h:1", lone_user).unwrap();
        assert_eq!(store.info.redis_settings().username(), None);
    }
}
