use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::redis_store::RedisUrl;
use crate::{
    AuthToken, EtcdStore, EtcdStoreConfig, HttpStore, HttpStoreConfig, MetadataError,
    MetadataStore, RedisCredentials, RedisStore, RedisStoreConfig,
};

/// A parsed metadata connection string, as accepted by Mooncake's `--metadata_server`.
#[derive(Clone, PartialEq, Eq)]
pub enum MetadataUri {
    /// `http://host:port/path`: the whole string is the base URL of an HTTP metadata server.
    Http {
        /// The base URL; requests go to `<base>?key=<escaped key>`.
        base: String,
    },
    /// `etcd://h1:2379;h2:2379` (`;` or `,` between endpoints, as Mooncake's etcd client
    /// splits them), or a bare `host:port` list (Mooncake treats a string without `://`
    /// as etcd endpoints). An endpoint may carry an `http://` prefix, which is dropped.
    Etcd {
        /// The `host:port` endpoints.
        endpoints: Vec<String>,
    },
    /// `redis://[user[:password]@]host[:port][/db]` (port 6379 by default). The C++ engine
    /// takes only `redis://host:port` and reads the login from `MC_REDIS_*` variables.
    Redis {
        /// The full URL.
        url: String,
    },
    /// `P2PHANDSHAKE`: no central store; descriptors are exchanged peer to peer.
    P2pHandshake,
}

impl MetadataUri {
    /// Parses a connection string; the error names the string and what is wrong with it.
    pub fn parse(input: &str) -> Result<Self, MetadataError> {
        let invalid = |reason: &str| MetadataError::InvalidUri {
            input: redact(input),
            reason: reason.to_owned(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        if s == "P2PHANDSHAKE" {
            return Ok(Self::P2pHandshake);
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(Self::Etcd {
                endpoints: parse_endpoints(s, &invalid)?,
            });
        };
        match scheme.to_ascii_lowercase().as_str() {
            "http" => {
                let uri: http::Uri = s.parse().map_err(|e| invalid(&format!("not a URL: {e}")))?;
                let host = uri.host().unwrap_or_default();
                if host.is_empty() {
                    return Err(invalid("the URL has no host"));
                }
                let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
                let port = authority
                    .rsplit_once(':')
                    .map(|(_, p)| p)
                    .filter(|p| !p.ends_with(']'));
                if port.is_some_and(|p| p.parse::<u16>().is_err()) {
                    return Err(invalid("the port is not a number from 0 to 65535"));
                }
                Ok(Self::Http { base: s.to_owned() })
            }
            "https" => Err(invalid(
                "https metadata servers are not supported: this build has no TLS; use http://",
            )),
            "etcd" => Ok(Self::Etcd {
                endpoints: parse_endpoints(rest, &invalid)?,
            }),
            "redis" | "rediss" => {
                RedisUrl::parse(s).map_err(|reason| invalid(&reason))?;
                Ok(Self::Redis { url: s.to_owned() })
            }
            other => Err(invalid(&format!(
                "unknown scheme `{other}` (expected http://, etcd://, redis:// or P2PHANDSHAKE)"
            ))),
        }
    }
}

fn parse_endpoints(
    list: &str,
    invalid: &dyn Fn(&str) -> MetadataError,
) -> Result<Vec<String>, MetadataError> {
    let endpoints: Vec<String> = list
        .split([';', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("http://").unwrap_or(e).to_owned())
        .collect();
    if endpoints.is_empty() {
        return Err(invalid("no etcd endpoint given"));
    }
    for e in &endpoints {
        if e.contains("://") {
            return Err(invalid(&format!(
                "etcd endpoint `{e}`: only plain http:// endpoints are supported (this build has no TLS)"
            )));
        }
        let Some((host, port)) = e.rsplit_once(':') else {
            return Err(invalid(&format!("etcd endpoint `{e}` is not host:port")));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(invalid(&format!("etcd endpoint `{e}` is not host:port")));
        }
    }
    Ok(endpoints)
}

impl FromStr for MetadataUri {
    type Err = MetadataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for MetadataUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http { base } => f.write_str(base),
            Self::Etcd { endpoints } => write!(f, "etcd://{}", endpoints.join(",")),
            Self::Redis { url } => f.write_str(&redact(url)),
            Self::P2pHandshake => f.write_str("P2PHANDSHAKE"),
        }
    }
}

/// As `Display`: a Redis password never reaches a log line.
impl fmt::Debug for MetadataUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http { base } => f.debug_struct("Http").field("base", base).finish(),
            Self::Etcd { endpoints } => f
                .debug_struct("Etcd")
                .field("endpoints", endpoints)
                .finish(),
            Self::Redis { url } => f.debug_struct("Redis").field("url", &redact(url)).finish(),
            Self::P2pHandshake => f.write_str("P2pHandshake"),
        }
    }
}

/// `input` with the password of a `scheme://user:password@host…` URL replaced by `***`,
/// for error messages and logs.
pub fn redact(input: &str) -> String {
    let Some(start) = input.find("://").map(|i| i + 3) else {
        return input.to_owned();
    };
    let end = input[start..].find('/').map_or(input.len(), |i| start + i);
    let Some(at) = input[start..end].rfind('@').map(|i| start + i) else {
        return input.to_owned();
    };
    match input[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &input[..start + colon], &input[at..]),
        None => input.to_owned(),
    }
}

/// Parses a connection string and builds the backend it names, with default timeouts:
/// [`HttpStore`], [`EtcdStore`] or [`RedisStore`]. No connection is made yet.
///
/// A Redis store logs in with [`RedisCredentials::from_env`] (`MC_REDIS_USERNAME`,
/// `MC_REDIS_PASSWORD`, `MC_REDIS_DB_INDEX`, as the C++ engine), overridden by the
/// parts the URL gives. `P2PHANDSHAKE` is an error because it has no central store.
pub fn connect(input: &str) -> Result<Arc<dyn MetadataStore>, MetadataError> {
    connect_with(input, None)
}

/// [`connect`] presenting `auth_token` to servers that need one for writes (the HTTP
/// metadata server; etcd and Redis have their own login).
pub fn connect_with(
    input: &str,
    auth_token: Option<AuthToken>,
) -> Result<Arc<dyn MetadataStore>, MetadataError> {
    match MetadataUri::parse(input)? {
        MetadataUri::Http { base } => Ok(Arc::new(HttpStore::new(
            &base,
            HttpStoreConfig {
                auth_token,
                ..HttpStoreConfig::default()
            },
        )?)),
        MetadataUri::Etcd { endpoints } => Ok(Arc::new(EtcdStore::with_endpoints(
            &endpoints,
            EtcdStoreConfig::default(),
        )?)),
        MetadataUri::Redis { url } => Ok(Arc::new(RedisStore::new(
            &url,
            RedisStoreConfig {
                credentials: RedisCredentials::from_env(),
                ..RedisStoreConfig::default()
            },
        )?)),
        MetadataUri::P2pHandshake => Err(MetadataError::NoCentralStore {
            mode: "P2PHANDSHAKE",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(input: &str) -> String {
        match MetadataUri::parse(input) {
            Err(MetadataError::InvalidUri { input: i, reason }) => {
                assert_eq!(i, input);
                reason
            }
            other => panic!("expected InvalidUri for {input:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_mooncake_form() {
        assert_eq!(
            MetadataUri::parse("http://127.0.0.1:8080/metadata").unwrap(),
            MetadataUri::Http {
                base: "http://127.0.0.1:8080/metadata".into()
            }
        );
        assert_eq!(
            MetadataUri::parse("etcd://h1:2379,h2:2379").unwrap(),
            MetadataUri::Etcd {
                endpoints: vec!["h1:2379".into(), "h2:2379".into()]
            }
        );
        assert_eq!(
            MetadataUri::parse("etcd://h1:2379;h2:2379").unwrap(),
            MetadataUri::Etcd {
                endpoints: vec!["h1:2379".into(), "h2:2379".into()]
            }
        );
        assert_eq!(
            MetadataUri::parse("etcd://http://h1:2379; h2:2379,[::1]:2379;").unwrap(),
            MetadataUri::Etcd {
                endpoints: vec!["h1:2379".into(), "h2:2379".into(), "[::1]:2379".into()]
            }
        );
        assert_eq!(
            MetadataUri::parse("10.0.0.1:2379").unwrap(),
            MetadataUri::Etcd {
                endpoints: vec!["10.0.0.1:2379".into()]
            }
        );
        assert_eq!(
            MetadataUri::parse("10.0.0.1:2379;10.0.0.2:2379").unwrap(),
            MetadataUri::Etcd {
                endpoints: vec!["10.0.0.1:2379".into(), "10.0.0.2:2379".into()]
            }
        );
        assert_eq!(
            MetadataUri::parse("redis://user:pw@r:6380/2").unwrap(),
            MetadataUri::Redis {
                url: "redis://user:pw@r:6380/2".into()
            }
        );
        assert_eq!(
            MetadataUri::parse("redis://127.0.0.1:6379").unwrap(),
            MetadataUri::Redis {
                url: "redis://127.0.0.1:6379".into()
            }
        );
        assert_eq!(
            MetadataUri::parse("P2PHANDSHAKE").unwrap(),
            MetadataUri::P2pHandshake
        );
    }

    #[test]
    fn malformed_strings_name_the_problem() {
        assert_eq!(reason(""), "it is empty");
        assert_eq!(
            reason("ftp://x:1/metadata"),
            "unknown scheme `ftp` (expected http://, etcd://, redis:// or P2PHANDSHAKE)"
        );
        assert!(reason("http:///metadata").starts_with("not a URL"));
        assert_eq!(
            reason("http://host:99999999/metadata"),
            "the port is not a number from 0 to 65535"
        );
        assert_eq!(reason("etcd://"), "no etcd endpoint given");
        assert_eq!(
            reason("etcd://hostonly"),
            "etcd endpoint `hostonly` is not host:port"
        );
        assert_eq!(
            reason("p2phandshake"),
            "etcd endpoint `p2phandshake` is not host:port"
        );
        assert!(reason("https://h:1/m").contains("no TLS"));
        assert_eq!(reason("etcd://;,"), "no etcd endpoint given");
        assert!(reason("etcd://https://h:2379").contains("no TLS"));
        assert!(reason("rediss://r:6379").contains("no TLS"));
        assert_eq!(reason("redis://"), "the redis URL has no host");
        assert_eq!(
            reason("redis://r:6379/x"),
            "database index `x` is not a number from 0 to 255"
        );
    }

    #[tokio::test]
    async fn etcd_and_redis_strings_open_their_stores() {
        let etcd = connect("etcd://127.0.0.1:2379;127.0.0.2:2379").unwrap();
        assert_eq!(
            etcd.describe(),
            "etcd metadata store etcd://127.0.0.1:2379,127.0.0.2:2379"
        );
        let bare = connect("127.0.0.1:2379").unwrap();
        assert_eq!(bare.describe(), "etcd metadata store etcd://127.0.0.1:2379");
        let redis = connect("redis://:pw@127.0.0.1:6379/1").unwrap();
        assert_eq!(
            redis.describe(),
            "redis metadata store redis://127.0.0.1:6379/1"
        );
        let err = connect("P2PHANDSHAKE").unwrap_err();
        assert_eq!(
            err,
            MetadataError::NoCentralStore {
                mode: "P2PHANDSHAKE"
            }
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "http://h:1/metadata",
            "etcd://a:1,b:2",
            "redis://r:6379",
            "P2PHANDSHAKE",
        ] {
            assert_eq!(MetadataUri::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn redis_passwords_never_reach_messages() {
        assert_eq!(redact("redis://:hunter2@r:6379/1"), "redis://:***@r:6379/1");
        assert_eq!(redact("redis://alice:pw@r"), "redis://alice:***@r");
        assert_eq!(redact("redis://alice@r"), "redis://alice@r");
        assert_eq!(redact("etcd://h:1;h:2"), "etcd://h:1;h:2");
        assert_eq!(redact("h:1"), "h:1");
        let uri = MetadataUri::parse("redis://:hunter2@r:6379").unwrap();
        assert!(!uri.to_string().contains("hunter2"));
        assert!(!format!("{uri:?}").contains("hunter2"));
        let err = MetadataUri::parse("rediss://:hunter2@r:6380").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
