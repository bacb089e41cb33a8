//! The task store of one case: the memory store, or a fresh key prefix on
//! the shared Redis (`bench:<uuid>:`) whose keys are deleted (SCAN + UNLINK,
//! never FLUSH: other users share that Redis) when the case ends. Also the
//! Redis server as a measured process: its pid from `INFO server`, when it
//! runs on this machine, for its CPU beside the server's.

use redis::{self, AsyncCommands, aio::MultiplexedConnection};

use crate::{cli::StoreKind, procfs};

/// Keys a SCAN step asks for and an UNLINK deletes at once.
const SCAN_BATCH: usize = 1_000;

/// Where a measured server keeps its tasks.
pub enum CaseStore {
    /// The in-process store.
    Memory,
    /// The Redis store under a prefix of this case's own.
    Redis(RedisPrefix),
}

impl CaseStore {
    /// A store of `kind` for one case; Redis gets a fresh prefix. Panics
    /// when Redis does not answer: the run asked for it.
    pub async fn open(kind: StoreKind, redis_url: &str, keep_keys: bool) -> CaseStore {
        match kind {
            StoreKind::Memory => CaseStore::Memory,
            StoreKind::Redis => CaseStore::Redis(RedisPrefix::new(redis_url, keep_keys).await),
        }
    }

    /// The `--serve` flags that put the server on this store.
    pub fn serve_args(&self) -> Vec<String> {
        match self {
            CaseStore::Memory => Vec::new(),
            CaseStore::Redis(p) => vec![
                "--redis-url".to_string(),
                p.url.clone(),
                "--key-prefix".to_string(),
                p.prefix.clone(),
            ],
        }
    }

    /// The Redis server's pid, when the store is Redis on this machine.
    pub fn redis_pid(&self) -> Option<u32> {
        match self {
            CaseStore::Memory => None,
            CaseStore::Redis(p) => p.redis_pid,
        }
    }

    /// Redis' `used_memory` now, for the store's growth over a case (the
    /// Redis is shared, so others' keys move it a little too).
    pub async fn redis_used_memory(&self) -> Option<u64> {
        match self {
            CaseStore::Memory => None,
            CaseStore::Redis(p) => info_field(&mut p.conn.clone(), "memory", "used_memory").await,
        }
    }

    /// Redis' `INFO commandstats` now: calls and microseconds per command
    /// (commands that scripts run are counted too, under their own names).
    pub async fn redis_commandstats(&self) -> Option<CommandStats> {
        let CaseStore::Redis(p) = self else {
            return None;
        };
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut p.conn.clone())
            .await
            .ok()?;
        Some(CommandStats::parse(&info))
    }

    /// The replica owning each of `shards` shards (`{s<N>}:lease`'s
    /// owner, empty when none); empty for the memory store.
    pub async fn lease_owners(&self, shards: u32) -> Vec<String> {
        let CaseStore::Redis(p) = self else {
            return Vec::new();
        };
        let mut pipe = redis::pipe();
        for shard in 0..shards {
            pipe.hget(format!("{}{{s{shard}}}:lease", p.prefix), "owner");
        }
        let owners: Vec<Option<String>> = pipe
            .query_async(&mut p.conn.clone())
            .await
            .unwrap_or_default();
        owners.into_iter().map(Option::unwrap_or_default).collect()
    }

    /// Ends the case: deletes the prefix's keys (unless kept). Call after
    /// the servers on it have stopped, so none writes again.
    pub async fn finish(self) {
        if let CaseStore::Redis(p) = self {
            p.clear().await;
        }
    }
}

/// Calls and time per Redis command, from `INFO commandstats`.
#[derive(Debug, Clone, Default)]
pub struct CommandStats {
    /// Command name -> (calls, microseconds).
    pub commands: std::collections::BTreeMap<String, (u64, u64)>,
}

impl CommandStats {
    /// Reads `cmdstat_<name>:calls=N,usec=N,...` lines.
    fn parse(info: &str) -> CommandStats {
        let mut commands = std::collections::BTreeMap::new();
        for line in info.lines() {
            let Some((name, fields)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            commands.insert(name.to_string(), (field("calls"), field("usec")));
        }
        CommandStats { commands }
    }

    /// What happened between `earlier` and `self`, busiest first. The
    /// Redis is shared: other clients' commands are in it too.
    pub fn since(&self, earlier: &CommandStats) -> Vec<(String, u64, u64)> {
        let mut delta: Vec<(String, u64, u64)> = self
            .commands
            .iter()
            .map(|(name, &(calls, usec))| {
                let (c0, u0) = earlier.commands.get(name).copied().unwrap_or((0, 0));
                (
                    name.clone(),
                    calls.saturating_sub(c0),
                    usec.saturating_sub(u0),
                )
            })
            .filter(|(_, calls, _)| *calls > 0)
            .collect();
        delta.sort_by_key(|d| std::cmp::Reverse(d.1));
        delta
    }
}

/// A key prefix of one case on the shared Redis.
pub struct RedisPrefix {
    /// The Redis.
    url: String,
    /// `bench:<uuid>:`.
    prefix: String,
    /// The Redis server's pid, when it runs on this machine.
    redis_pid: Option<u32>,
    /// For `INFO` and the cleanup.
    conn: MultiplexedConnection,
    /// Leave the keys when the case ends.
    keep: bool,
    /// Set once `clear` has run; a prefix dropped without it (a panicking
    /// case) is cleared on drop.
    cleared: bool,
}

impl RedisPrefix {
    async fn new(url: &str, keep: bool) -> RedisPrefix {
        let mut conn = connect(url).await;
        let prefix = format!("bench:{}:", uuid::Uuid::new_v4().simple());
        let redis_pid = redis_pid(&mut conn).await;
        if redis_pid.is_none() {
            eprintln!("  redis at {url} is not a process of this machine: its CPU is not measured");
        }
        RedisPrefix {
            url: url.to_string(),
            prefix,
            redis_pid,
            conn,
            keep,
            cleared: false,
        }
    }

    /// `bench:<uuid>:`, for keys of the bench's own.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deletes every key under the prefix.
    async fn clear(mut self) {
        self.cleared = true;
        if self.keep {
            eprintln!("  redis keys kept under {}", self.prefix);
            return;
        }
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        let mut deleted = 0usize;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .query_async(&mut self.conn)
                .await
                .unwrap_or_else(|e| panic!("scanning {pattern} to delete it: {e}"));
            if !keys.is_empty() {
                let n: usize = self
                    .conn
                    .unlink(&keys)
                    .await
                    .unwrap_or_else(|e| panic!("deleting keys under {pattern}: {e}"));
                deleted += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        eprintln!("  deleted {deleted} redis keys under {}", self.prefix);
    }
}

impl Drop for RedisPrefix {
    /// A case that panicked leaves no keys behind on the shared Redis
    /// either: blocking commands, since drop cannot wait on the runtime.
    fn drop(&mut self) {
        if self.cleared || self.keep {
            return;
        }
        let pattern = format!("{}*", self.prefix);
        let cleared = redis::Client::open(self.url.as_str())
            .and_then(|client| client.get_connection())
            .and_then(|mut conn| {
                let keys: Vec<String> =
                    redis::Commands::scan_match(&mut conn, &pattern)?.collect::<Result<_, _>>()?;
                for chunk in keys.chunks(SCAN_BATCH) {
                    redis::Commands::unlink::<_, ()>(&mut conn, chunk)?;
                }
                Ok(keys.len())
            });
        match cleared {
            Ok(n) => eprintln!(
                "  deleted {n} redis keys under {} on the way out",
                self.prefix
            ),
            Err(e) => eprintln!(
                "  could not delete the redis keys under {}: {e}",
                self.prefix
            ),
        }
    }
}

/// A multiplexed connection to `url`; panics when Redis does not answer.
pub async fn connect(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap_or_else(|e| panic!("{url} is not a Redis URL: {e}"))
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("connecting to Redis at {url}: {e} (the redis store, recovery and pool need it; `--store memory` runs without)")
        })
}

/// `INFO <section>` field `name` as a number.
async fn info_field(conn: &mut MultiplexedConnection, section: &str, name: &str) -> Option<u64> {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// The Redis server's pid from `INFO server`, if that process is on this
/// machine: /proc has a `redis-server` by that pid. (A Redis in another
/// PID namespace or host reports a pid that is not its here.)
pub async fn redis_pid(conn: &mut MultiplexedConnection) -> Option<u32> {
    let pid = u32::try_from(info_field(conn, "server", "process_id").await?).ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim().starts_with("redis-server") && procfs::cpu_seconds(pid).is_some()).then_some(pid)
}
