//! The Redis side of the cluster: one multiplexed connection, opened again after any failure,
//! and the few commands the cluster uses. Every reply is checked against the shape it must have;
//! a reply of another shape is an error ([`StoreError::Reply`]), never a panic.
//!
//! Key layout (every key under the `golive:` prefix, so one Redis may serve other things too):
//! - `golive:node:<id>`: a node's heartbeat record (JSON), with an expiry;
//! - `golive:origin:<stream>`: the id of the node that holds the stream's broadcaster (its lease),
//!   with an expiry its holder keeps pushing back;
//! - `golive:relays:<stream>`: a hash of the nodes that hold the stream (its origin and every
//!   node that relays it) to the relays each serves, with an expiry every such node pushes back.
//! - the audience's shared state, in `pubsub`: `golive:live:<stream>` (the pub/sub channel),
//!   `golive:chat:<stream>` (the last 50 chat messages), `golive:chatid:<stream>`,
//!   `golive:hearts:<stream>` and `golive:muted:<stream>`.

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use std::time::Duration;
use tokio::sync::Mutex;

use golive_proto::StreamName;

const NODE_PREFIX: &str = "golive:node:";
const RELAYS_PREFIX: &str = "golive:relays:";

/// Sets this node's entry in a stream's relay hash and pushes the hash's expiry back.
const RELAY_ENTRY_SCRIPT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1";
pub(super) const ORIGIN_PREFIX: &str = "golive:origin:";
/// How long connecting and each command may take before Redis counts as unreachable.
pub(super) const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys asked for per SCAN step.
const SCAN_COUNT: usize = 256;

/// Renews the lease when this node holds it; takes it again when it is gone (Redis restarted
/// empty, or the lease expired while Redis was out of reach) and nobody else took it meanwhile.
/// 1: renewed, 2: taken again, 0: another node holds it.
const RENEW_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0";

/// Deletes the lease only when this node holds it.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {REDIS_TIMEOUT:?}")]
    Timeout,
    /// Redis answered with something this command never returns.
    #[error("unexpected reply to {command}: {reply:?}")]
    Reply {
        command: &'static str,
        reply: String,
    },
}

pub(super) fn unexpected(command: &'static str, v: &Value) -> StoreError {
    let mut reply = format!("{v:?}");
    reply.truncate(200);
    StoreError::Reply { command, reply }
}

/// What taking a stream's lease came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// This node is the stream's origin now (or already was).
    Held,
    /// Another node holds it: its id.
    Busy(String),
}

/// What pushing back a lease's expiry came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renew {
    Renewed,
    /// The lease was gone and this node holds it again.
    Retaken,
    /// Another node holds it now.
    Lost,
}

pub struct Store {
    pub(super) client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl Store {
    /// Checks the URL; connects on first use.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs one command; any failure drops the connection, so the next command opens a new one.
    pub(super) async fn query(&self, cmd: &redis::Cmd) -> Result<Value, StoreError> {
        let mut c = self.connection().await?;
        let r = match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<Value>(&mut c)).await {
            Ok(Ok(Value::ServerError(e))) => Err(StoreError::Redis(e.into())),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout),
        };
        if r.is_err() {
            *self.conn.lock().await = None;
        }
        r
    }

    /// How long Redis has been running (`INFO server`).
    pub async fn uptime(&self) -> Result<Duration, StoreError> {
        let v = self.query(redis::cmd("INFO").arg("server")).await?;
        let text = match &v {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::VerbatimString { text, .. } => text.clone(),
            other => return Err(unexpected("INFO", other)),
        };
        text.lines()
            .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .ok_or_else(|| unexpected("INFO", &v))
    }

    /// Writes this node's heartbeat record, to expire after `ttl`.
    pub async fn heartbeat(&self, id: &str, record: &str, ttl: Duration) -> Result<(), StoreError> {
        let v = self
            .query(
                redis::cmd("SET")
                    .arg(format!("{NODE_PREFIX}{id}"))
                    .arg(record)
                    .arg("PX")
                    .arg(ttl.as_millis() as u64),
            )
            .await?;
        match v {
            Value::Okay => Ok(()),
            Value::SimpleString(s) if s == "OK" => Ok(()),
            other => Err(unexpected("SET", &other)),
        }
    }

    /// Removes this node's heartbeat (a clean shutdown).
    pub async fn leave(&self, id: &str) -> Result<(), StoreError> {
        self.query(redis::cmd("DEL").arg(format!("{NODE_PREFIX}{id}")))
            .await
            .map(drop)
    }

    /// Every live node's record, as (key, raw value); values that expired between the scan and
    /// the read are left out.
    pub async fn nodes(&self) -> Result<Vec<(String, Value)>, StoreError> {
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let v = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{NODE_PREFIX}*"))
                        .arg("COUNT")
                        .arg(SCAN_COUNT),
                )
                .await?;
            let Value::Array(parts) = &v else {
                return Err(unexpected("SCAN", &v));
            };
            let [next, Value::Array(found)] = parts.as_slice() else {
                return Err(unexpected("SCAN", &v));
            };
            cursor = match next {
                Value::BulkString(b) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| unexpected("SCAN", &v))?,
                _ => return Err(unexpected("SCAN", &v)),
            };
            for k in found {
                match k {
                    Value::BulkString(b) => {
                        keys.push(String::from_utf8(b.clone()).map_err(|_| unexpected("SCAN", &v))?)
                    }
                    _ => return Err(unexpected("SCAN", &v)),
                }
            }
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let v = self.query(redis::cmd("MGET").arg(&keys)).await?;
        let Value::Array(values) = v else {
            return Err(unexpected("MGET", &v));
        };
        if values.len() != keys.len() {
            return Err(StoreError::Reply {
                command: "MGET",
                reply: format!("{} values for {} keys", values.len(), keys.len()),
            });
        }
        Ok(keys
            .into_iter()
            .zip(values)
            .filter(|(_, v)| !matches!(v, Value::Nil))
            .collect())
    }

    /// Takes the lease of `stream` for node `id` (`SET NX PX`), unless another node holds it.
    pub async fn acquire(
        &self,
        stream: &StreamName,
        id: &str,
        ttl: Duration,
    ) -> Result<Acquire, StoreError> {
        let key = format!("{ORIGIN_PREFIX}{stream}");
        let v = self
            .query(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(id)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64),
            )
            .await?;
        match v {
            Value::Okay => return Ok(Acquire::Held),
            Value::SimpleString(s) if s == "OK" => return Ok(Acquire::Held),
            Value::Nil => {}
            other => return Err(unexpected("SET NX", &other)),
        }
        // Held already: by this node (a broadcaster back within its grace period) or another.
        match self.query(redis::cmd("GET").arg(&key)).await? {
            Value::BulkString(b) if b == id.as_bytes() => Ok(Acquire::Held),
            Value::BulkString(b) => Ok(Acquire::Busy(String::from_utf8_lossy(&b).into_owned())),
            // Expired between the two commands: the caller may try again.
            Value::Nil => Ok(Acquire::Busy(String::new())),
            other => Err(unexpected("GET", &other)),
        }
    }

    /// Pushes back the expiry of a lease this node holds (see [`RENEW_SCRIPT`]).
    pub async fn renew(
        &self,
        stream: &StreamName,
        id: &str,
        ttl: Duration,
    ) -> Result<Renew, StoreError> {
        let v = self
            .query(
                redis::cmd("EVAL")
                    .arg(RENEW_SCRIPT)
                    .arg(1)
                    .arg(format!("{ORIGIN_PREFIX}{stream}"))
                    .arg(id)
                    .arg(ttl.as_millis() as u64),
            )
            .await?;
        match v {
            Value::Int(1) => Ok(Renew::Renewed),
            Value::Int(2) => Ok(Renew::Retaken),
            Value::Int(0) => Ok(Renew::Lost),
            other => Err(unexpected("EVAL renew", &other)),
        }
    }

    /// Gives up the lease of `stream`, when this node holds it.
    pub async fn release(&self, stream: &StreamName, id: &str) -> Result<(), StoreError> {
        let v = self
            .query(
                redis::cmd("EVAL")
                    .arg(RELEASE_SCRIPT)
                    .arg(1)
                    .arg(format!("{ORIGIN_PREFIX}{stream}"))
                    .arg(id),
            )
            .await?;
        match v {
            Value::Int(0 | 1) => Ok(()),
            other => Err(unexpected("EVAL release", &other)),
        }
    }

    /// The node holding the lease of `stream`, if any.
    pub async fn origin_of(&self, stream: &StreamName) -> Result<Option<String>, StoreError> {
        match self
            .query(redis::cmd("GET").arg(format!("{ORIGIN_PREFIX}{stream}")))
            .await?
        {
            Value::Nil => Ok(None),
            Value::BulkString(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| StoreError::Reply {
                    command: "GET",
                    reply: "a lease that is not UTF-8".into(),
                }),
            other => Err(unexpected("GET", &other)),
        }
    }

    /// Says that this node holds `stream` and serves `children` relays of it, for the other
    /// nodes choosing where to pull it from; the entry goes with the hash's expiry unless
    /// renewed.
    pub async fn set_relay_entry(
        &self,
        stream: &StreamName,
        id: &str,
        children: usize,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let v = self
            .query(
                redis::cmd("EVAL")
                    .arg(RELAY_ENTRY_SCRIPT)
                    .arg(1)
                    .arg(format!("{RELAYS_PREFIX}{stream}"))
                    .arg(id)
                    .arg(children)
                    .arg(ttl.as_millis() as u64),
            )
            .await?;
        match v {
            Value::Int(1) => Ok(()),
            other => Err(unexpected("EVAL relay entry", &other)),
        }
    }

    /// Removes this node's entry from a stream's relay hash.
    pub async fn drop_relay_entry(&self, stream: &StreamName, id: &str) -> Result<(), StoreError> {
        match self
            .query(
                redis::cmd("HDEL")
                    .arg(format!("{RELAYS_PREFIX}{stream}"))
                    .arg(id),
            )
            .await?
        {
            Value::Int(_) => Ok(()),
            other => Err(unexpected("HDEL", &other)),
        }
    }

    /// The nodes that hold `stream` and how many relays each serves.
    pub async fn relay_entries(
        &self,
        stream: &StreamName,
    ) -> Result<Vec<(String, usize)>, StoreError> {
        let v = self
            .query(redis::cmd("HGETALL").arg(format!("{RELAYS_PREFIX}{stream}")))
            .await?;
        let pairs: Vec<(Value, Value)> = match v {
            Value::Array(items) if items.len() % 2 == 0 => {
                let mut it = items.into_iter();
                std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
            }
            Value::Map(pairs) => pairs,
            other => return Err(unexpected("HGETALL", &other)),
        };
        let text = |v: &Value| match v {
            Value::BulkString(b) => std::str::from_utf8(b).ok().map(str::to_owned),
            _ => None,
        };
        pairs
            .iter()
            .map(|(k, v)| {
                let id = text(k);
                let n = text(v).and_then(|n| n.parse::<usize>().ok());
                match (id, n) {
                    (Some(id), Some(n)) => Ok((id, n)),
                    _ => Err(unexpected(
                        "HGETALL",
                        &Value::Map(vec![(k.clone(), v.clone())]),
                    )),
                }
            })
            .collect()
    }
}
