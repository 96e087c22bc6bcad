//! What `store_bench` measures: the Mooncake store, or (`--redis host:port`) a Redis
//! server, the yardstick users compare a KV cache store with. Both answer the same copying
//! and batch calls, so one loop times a row for either; the zero-copy calls are the
//! store's own (`Target::mooncake`).

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mooncake_store::{Client, ReplicateConfig};

/// How long a Redis call may take: a batch of 32 values of 16 MiB is 512 MiB each way.
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long connecting to Redis may take.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A store the plan runs against.
pub(crate) enum Target {
    /// A pure Mooncake store client.
    Mooncake(Client),
    /// One connection to a Redis server: `SET`/`GET` for single values, `MSET`/`MGET`
    /// for batches (one round trip each, as `put_batch`/`get_batch` aim for), `DEL`.
    ///
    /// A plain blocking connection, as redis-py's: the crate's multiplexed async one
    /// hands every command to a driver task and back, which measured 4 KiB `GET` at a
    /// p50 of 86 µs here against redis-py's ~60. The plan calls one at a time, so
    /// blocking the calling worker for the length of a call holds up nothing else.
    Redis(Mutex<redis::Connection>),
}

impl Target {
    /// Connects to the Redis server at `addr` (`host:port` or a `redis://` URL).
    pub(crate) async fn redis(addr: &str) -> Result<Self> {
        let url = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("redis://{addr}")
        };
        let client =
            redis::Client::open(url.as_str()).with_context(|| format!("redis address {addr:?}"))?;
        let con = client
            .get_connection_with_timeout(REDIS_CONNECT_TIMEOUT)
            .with_context(|| format!("cannot connect to redis at {addr}"))?;
        con.set_read_timeout(Some(REDIS_RESPONSE_TIMEOUT))?;
        con.set_write_timeout(Some(REDIS_RESPONSE_TIMEOUT))?;
        Ok(Self::Redis(Mutex::new(con)))
    }

    /// Runs one Redis command on the connection.
    fn redis_call<T: redis::FromRedisValue>(
        con: &Mutex<redis::Connection>,
        cmd: &redis::Cmd,
        what: &str,
    ) -> Result<T> {
        let mut con = con
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cmd.query(&mut *con)
            .with_context(|| format!("redis {what}"))
    }

    /// The store client, when this is Mooncake (the zero-copy rows need it).
    pub(crate) fn mooncake(&self) -> Option<&Client> {
        match self {
            Self::Mooncake(c) => Some(c),
            Self::Redis(_) => None,
        }
    }

    /// Writes one value.
    pub(crate) async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        match self {
            Self::Mooncake(c) => c
                .put(key, value, &ReplicateConfig::default())
                .await
                .map_err(|e| anyhow::anyhow!("put: {e}")),
            Self::Redis(con) => Self::redis_call(con, redis::cmd("SET").arg(key).arg(value), "SET"),
        }
    }

    /// Reads one value; a missing key is an error.
    pub(crate) async fn get(&self, key: &str) -> Result<Vec<u8>> {
        match self {
            Self::Mooncake(c) => c.get(key).await.map_err(|e| anyhow::anyhow!("get: {e}")),
            Self::Redis(con) => {
                Self::redis_call::<Option<Vec<u8>>>(con, redis::cmd("GET").arg(key), "GET")?
                    .with_context(|| format!("redis GET: no value under {key:?}"))
            }
        }
    }

    /// Writes one value per key, as one call.
    pub(crate) async fn put_batch(&self, items: &[(&str, &[u8])]) -> Result<()> {
        match self {
            Self::Mooncake(c) => {
                let r = c.put_batch(items, &ReplicateConfig::default()).await;
                match r.into_iter().find_map(Result::err) {
                    Some(e) => bail!("put_batch: {e}"),
                    None => Ok(()),
                }
            }
            Self::Redis(con) => {
                let mut cmd = redis::cmd("MSET");
                for (k, v) in items {
                    cmd.arg(*k).arg(*v);
                }
                Self::redis_call(con, &cmd, "MSET")
            }
        }
    }

    /// Reads the values of `keys`, as one call; a missing key is an error.
    pub(crate) async fn get_batch(&self, keys: &[&str]) -> Result<Vec<Vec<u8>>> {
        match self {
            Self::Mooncake(c) => c
                .get_batch(keys)
                .await
                .into_iter()
                .map(|r| r.map_err(|e| anyhow::anyhow!("get_batch: {e}")))
                .collect(),
            Self::Redis(con) => {
                let got: Vec<Option<Vec<u8>>> =
                    Self::redis_call(con, redis::cmd("MGET").arg(keys), "MGET")?;
                got.into_iter()
                    .zip(keys)
                    .map(|(v, k)| v.with_context(|| format!("redis MGET: no value under {k:?}")))
                    .collect()
            }
        }
    }

    /// Removes `keys` (those that exist); between rows, so failures are only reported.
    pub(crate) async fn remove(&self, keys: &[String]) {
        match self {
            Self::Mooncake(c) => {
                c.batch_remove(keys, true).await;
            }
            Self::Redis(con) => {
                for chunk in keys.chunks(1024) {
                    let r = Self::redis_call::<i64>(con, redis::cmd("DEL").arg(chunk), "DEL");
                    if let Err(e) = r {
                        eprintln!("store_bench: {e:#}");
                    }
                }
            }
        }
    }

    /// Ends the session (a Mooncake client unregisters; a Redis connection just closes).
    pub(crate) async fn close(self) {
        if let Self::Mooncake(c) = self {
            c.close().await.ok();
        }
    }
}
