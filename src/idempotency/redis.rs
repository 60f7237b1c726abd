//! The Redis idempotency store (feature `redis`): keys shared by every
//! member of a group, across processes and machines.

use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Claim, IdempotencyStore};
use crate::error::{Error, Result};

/// Claims every key of a batch in one round trip. A key's value is `d`
/// once handled, `p:<owner>` while claimed; both expire (the TTL, the
/// lease). Answers 0 (new), 1 (done) or 2 (busy) per key.
const CLAIM: &str = r"
local out = {}
local mine = 'p:' .. ARGV[1]
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if not v then
    redis.call('SET', key, mine, 'PX', ARGV[2])
    out[i] = 0
  elseif v == 'd' then
    out[i] = 1
  elseif v == mine then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 0
  else
    out[i] = 2
  end
end
return out
";

/// Deletes the keys `ARGV[1]` still holds a claim on.
const RELEASE: &str = r"
local mine = 'p:' .. ARGV[1]
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == mine then
    redis.call('DEL', key)
  end
end
return 0
";

/// Keys in Redis under `kafkactor:idem:` (single Redis or a primary with
/// replicas; a batch's keys go in one script call, which Redis Cluster
/// would refuse across slots). One multiplexed connection, shared by every
/// subscription using the store, reconnecting by itself; each claim,
/// completion or release of a batch is one round trip.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    claim: redis::Script,
    release: redis::Script,
    prefix: String,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> Error {
    Error::Unavailable(format!("redis: {e}"))
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://127.0.0.1:6379`), waiting
    /// at most 5 s.
    ///
    /// # Errors
    /// [`Error::Config`] for a URL that does not parse,
    /// [`Error::Unavailable`] when Redis cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let client =
            redis::Client::open(url).map_err(|e| Error::Config(format!("redis URL {url}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(unavailable)?;
        Ok(RedisStore {
            connection,
            claim: redis::Script::new(CLAIM),
            release: redis::Script::new(RELEASE),
            prefix: "kafkactor:idem:".to_string(),
        })
    }

    /// Keys under `prefix` instead of `kafkactor:idem:`.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    fn keyed<'a>(&self, keys: &'a [String]) -> impl Iterator<Item = String> + 'a {
        let prefix = self.prefix.clone();
        keys.iter().map(move |k| format!("{prefix}{k}"))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl IdempotencyStore for RedisStore {
    fn claim<'a>(
        &'a self,
        keys: &'a [String],
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claim>>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let mut invocation = self.claim.prepare_invoke();
            for key in self.keyed(keys) {
                invocation.key(key);
            }
            invocation.arg(owner).arg(millis(lease));
            let mut connection = self.connection.clone();
            let answers: Vec<u8> = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(answers
                .into_iter()
                .map(|a| match a {
                    0 => Claim::New,
                    1 => Claim::Done,
                    _ => Claim::Busy,
                })
                .collect())
        })
    }

    fn complete<'a>(&'a self, keys: &'a [String], ttl: Duration) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            for key in self.keyed(keys) {
                pipe.cmd("SET")
                    .arg(key)
                    .arg("d")
                    .arg("PX")
                    .arg(millis(ttl))
                    .ignore();
            }
            let mut connection = self.connection.clone();
            pipe.query_async::<()>(&mut connection)
                .await
                .map_err(unavailable)
        })
    }

    fn release<'a>(&'a self, keys: &'a [String], owner: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(());
            }
            let mut invocation = self.release.prepare_invoke();
            for key in self.keyed(keys) {
                invocation.key(key);
            }
            invocation.arg(owner);
            let mut connection = self.connection.clone();
            invocation
                .invoke_async::<()>(&mut connection)
                .await
                .map_err(unavailable)
        })
    }
}
