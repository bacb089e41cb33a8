//! The managed Redis pool: a few shared, multiplexed connections, opened and
//! checked before the server takes calls, every connection named so
//! operators can find it in `CLIENT LIST` (also after a reconnect), and
//! closed (each sent QUIT, so Redis has forgotten it by the time
//! [`RedisPool::close`] returns) after the last runner stopped.
//!
//! Why not an exclusive-checkout pool: deadpool-redis, which this was,
//! allows only pool-size commands in flight and pings every connection it
//! hands out, a round trip before each command; one multiplexed connection
//! pipelines every caller's commands and answered 8x the commands at a
//! tenth of the latency at 64 callers (benches/README.md, "The pool, by
//! measurement"). redis-rs' own reconnecting `ConnectionManager` has no
//! hook after it reconnects, so its connections would lose their name: the
//! reconnect here is our own, and names each new connection.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};
use tokio::time::Instant;

/// First pause between start-up attempts to reach Redis; doubles each time.
const STARTUP_BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between start-up attempts, so Redis coming up is noticed soon.
const STARTUP_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long closing waits for Redis to answer QUIT on one connection.
const QUIT_TIMEOUT: Duration = Duration::from_secs(1);

/// Pool settings, taken from [`crate::Config`].
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Redis URL.
    pub url: String,
    /// Name every connection carries (`CLIENT SETNAME`).
    pub client_name: String,
    /// Shared connections, handed out in turn. Each carries any number of
    /// commands in flight; more than one spreads reading replies over the
    /// runtime's threads.
    pub size: usize,
    /// Bound of opening one connection.
    pub connect_timeout: Duration,
    /// Bound of one reply.
    pub response_timeout: Duration,
    /// How long [`RedisPool::open`] retries an unreachable Redis.
    pub startup_window: Duration,
}

/// Errors opening the pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The URL does not parse.
    #[error("invalid Redis URL: {source}")]
    InvalidUrl {
        /// Why.
        source: RedisError,
    },
    /// Redis did not answer within the start-up window.
    #[error("Redis at {url} unreachable for {waited:?}: {last_error}")]
    Unreachable {
        /// The URL, without password.
        url: String,
        /// How long we tried.
        waited: Duration,
        /// The last failure.
        last_error: String,
    },
}

/// Errors getting a connection from the pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The pool was closed (the server is stopping).
    #[error("the Redis pool is closed")]
    Closed,
    /// A new connection could not be made (Redis down, or refusing it).
    #[error("connecting to Redis failed: {0}")]
    Connect(#[from] RedisError),
}

/// Named, multiplexed Redis connections shared by every caller. Cheap to
/// clone.
#[derive(Clone)]
pub struct RedisPool {
    shared: Arc<Shared>,
}

struct Shared {
    client: redis::Client,
    config: AsyncConnectionConfig,
    client_name: String,
    slots: Vec<Slot>,
    /// The slot the next [`RedisPool::get`] hands out.
    next: AtomicUsize,
    closed: AtomicBool,
    /// Commands and pipelines sent and not answered yet: how busy a pool
    /// of multiplexed connections is (none is ever checked out).
    in_flight: AtomicU64,
    /// Commands Redis answered with an error ([`PoolGauges::reply_errors`]).
    reply_errors: AtomicU64,
    /// Commands lost with their connection ([`PoolGauges::connection_errors`]).
    broken: AtomicU64,
}

/// What `/metrics` shows of a pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolGauges {
    /// Connections the pool keeps at most.
    pub size: usize,
    /// Connections open now.
    pub open: usize,
    /// Commands (or pipelines) sent and not answered yet.
    pub in_flight: u64,
    /// Commands Redis answered with an error (a script error, WRONGTYPE),
    /// since start.
    pub reply_errors: u64,
    /// Commands that failed with the connection (I/O, timeout, dropped,
    /// READONLY after a failover), each closing it, since start.
    pub connection_errors: u64,
    /// Failed attempts to (re)connect, since start.
    pub connect_errors: u64,
}

/// One shared connection, made on first use and again after it failed.
#[derive(Default)]
struct Slot {
    /// The connection with its generation: a failure reported against an
    /// older generation must not drop a newer connection.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generations: AtomicU64,
    /// One reconnect at a time; callers meanwhile wait for it rather than
    /// open connections of their own.
    connecting: tokio::sync::Mutex<()>,
    /// The last failed reconnect, counted: callers that waited behind it
    /// get its error rather than try again one after another (each
    /// attempt may take the connect timeout against an unreachable Redis).
    failures: AtomicU64,
    last_failure: Mutex<Option<RedisError>>,
}

impl Slot {
    fn current(&self) -> MutexGuard<'_, Option<(u64, MultiplexedConnection)>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let connected = self
            .shared
            .slots
            .iter()
            .filter(|slot| slot.current().is_some())
            .count();
        f.debug_struct("RedisPool")
            .field("size", &self.shared.slots.len())
            .field("connected", &connected)
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl RedisPool {
    /// Opens the pool and checks it with a PING, retrying with backoff for
    /// `startup_window` before giving up.
    pub async fn open(settings: PoolSettings) -> Result<RedisPool, PoolError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|source| PoolError::InvalidUrl { source })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout));
        let pool = RedisPool {
            shared: Arc::new(Shared {
                client,
                config,
                client_name: settings.client_name.clone(),
                slots: (0..settings.size.max(1)).map(|_| Slot::default()).collect(),
                next: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                in_flight: AtomicU64::new(0),
                reply_errors: AtomicU64::new(0),
                broken: AtomicU64::new(0),
            }),
        };

        let started = Instant::now();
        let mut backoff = STARTUP_BACKOFF_FIRST;
        loop {
            let last_error = match pool.ping().await {
                Ok(()) => return Ok(pool),
                Err(e) => e,
            };
            let waited = started.elapsed();
            let Some(pause) = startup_pause(waited, backoff, settings.startup_window) else {
                return Err(PoolError::Unreachable {
                    url: redact_url(&settings.url),
                    waited,
                    last_error,
                });
            };
            tracing::warn!(
                error = %last_error,
                retry_in_ms = pause.as_millis() as u64,
                "redis not reachable yet"
            );
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(STARTUP_BACKOFF_MAX);
        }
    }

    /// A connection to send commands on: a handle to one of the shared
    /// ones, (re)made first if it is not connected. Commands sent on it
    /// pipeline with everyone else's; a failure that may have broken it
    /// makes the next `get` connect again.
    pub async fn get(&self) -> Result<RedisConnection, ConnectionError> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(ConnectionError::Closed);
        }
        let index = shared.next.fetch_add(1, Ordering::Relaxed) % shared.slots.len();
        let slot = &shared.slots[index];
        let held = |slot: &Slot| {
            slot.current().as_ref().map(|(generation, conn)| RedisConnection {
                conn: conn.clone(),
                shared: self.shared.clone(),
                index,
                generation: *generation,
            })
        };
        if let Some(conn) = held(slot) {
            return Ok(conn);
        }
        let failures = slot.failures.load(Ordering::Acquire);
        let _connecting = slot.connecting.lock().await;
        if let Some(conn) = held(slot) {
            return Ok(conn);
        }
        if slot.failures.load(Ordering::Acquire) != failures
            && let Some(error) = slot.last_failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
        {
            return Err(ConnectionError::Connect(error));
        }
        let conn = match self.connect().await {
            Ok(conn) => conn,
            Err(error) => {
                *slot.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.clone());
                slot.failures.fetch_add(1, Ordering::AcqRel);
                return Err(ConnectionError::Connect(error));
            }
        };
        let generation = slot.generations.fetch_add(1, Ordering::Relaxed);
        *slot.current() = Some((generation, conn));
        // A close that ran meanwhile did not see this connection.
        if shared.closed.load(Ordering::Acquire) {
            let taken = slot.current().take();
            if let Some((_, conn)) = taken {
                quit(conn).await;
            }
            return Err(ConnectionError::Closed);
        }
        held(slot).ok_or(ConnectionError::Closed)
    }

    /// A new connection, named.
    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let shared = &self.shared;
        let mut conn = shared
            .client
            .get_multiplexed_async_connection_with_config(&shared.config)
            .await?;
        // redis-rs has no connection-name option: name each connection as
        // it is made, which also covers every reconnect.
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(&shared.client_name)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(conn)
    }

    async fn ping(&self) -> Result<(), String> {
        let mut conn = self.get().await.map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Its gauges and error counts, as they are now.
    pub fn gauges(&self) -> PoolGauges {
        let shared = &self.shared;
        PoolGauges {
            size: shared.slots.len(),
            open: shared
                .slots
                .iter()
                .filter(|slot| slot.current().is_some())
                .count(),
            in_flight: shared.in_flight.load(Ordering::Relaxed),
            reply_errors: shared.reply_errors.load(Ordering::Relaxed),
            connection_errors: shared.broken.load(Ordering::Relaxed),
            connect_errors: shared
                .slots
                .iter()
                .map(|slot| slot.failures.load(Ordering::Relaxed))
                .sum(),
        }
    }

    /// Closes the pool: later [`get`](Self::get)s fail, and each connection
    /// is sent QUIT so that Redis has dropped it when this returns
    /// (dropping a multiplexed connection only closes its socket later,
    /// from a background task). Call after every user of the pool has
    /// stopped.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let held: Vec<MultiplexedConnection> = self
            .shared
            .slots
            .iter()
            .filter_map(|slot| slot.current().take().map(|(_, conn)| conn))
            .collect();
        // All at once, so closing takes at most QUIT_TIMEOUT whatever the
        // pool size: shutdown's documented bound counts on it.
        futures::future::join_all(held.into_iter().map(quit)).await;
    }
}

async fn quit(mut conn: MultiplexedConnection) {
    // QUIT is deprecated in Redis 7.2 but still served; an error means the
    // connection is already gone, which is what we want.
    let quit = redis::cmd("QUIT");
    let _ = tokio::time::timeout(QUIT_TIMEOUT, quit.query_async::<()>(&mut conn)).await;
}

impl Shared {
    /// Drops the slot's connection after a failure that may have broken it,
    /// unless it was already replaced.
    fn failed(&self, index: usize, generation: u64, error: &RedisError) {
        // A reply Redis sent (a script error, WRONGTYPE) leaves the
        // connection fine; a dead socket or a reply that never came may
        // not, and READONLY means the server behind the address was
        // demoted (a failover behind DNS or a proxy): a new connection may
        // reach the new primary.
        let broken = error.is_io_error()
            || error.is_connection_dropped()
            || error.is_unrecoverable_error()
            || error.is_timeout()
            || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
        if !broken {
            self.reply_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.broken.fetch_add(1, Ordering::Relaxed);
        let mut current = self.slots[index].current();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            tracing::debug!(%error, "redis connection failed; the next command reconnects");
            *current = None;
        }
    }
}

/// A handle to one of the pool's shared connections: send commands on it
/// (it is a redis-rs [`ConnectionLike`]) and clone it to send several at
/// once. Its failures tell the pool to reconnect.
#[derive(Clone)]
pub struct RedisConnection {
    conn: MultiplexedConnection,
    shared: Arc<Shared>,
    index: usize,
    generation: u64,
}

/// Reports a failed reply of `reply` to the pool. Takes the handle's fields
/// apart so the command's future can borrow the connection meanwhile.
fn observed<'a, T: Send + 'a>(
    shared: &'a Shared,
    index: usize,
    generation: u64,
    reply: RedisFuture<'a, T>,
) -> RedisFuture<'a, T> {
    Box::pin(async move {
        // A guard, not a decrement after the await: a caller may drop the
        // future unanswered (a timeout around it).
        struct InFlight<'a>(&'a AtomicU64);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(&shared.in_flight);
        let reply = reply.await;
        drop(in_flight);
        if let Err(error) = &reply {
            shared.failed(index, generation, error);
        }
        reply
    })
}

impl RedisConnection {
    /// Sends on the connection, reporting a failed reply to the pool.
    fn observe<'a, T: Send + 'a>(
        &'a mut self,
        send: impl FnOnce(&'a mut MultiplexedConnection) -> RedisFuture<'a, T>,
    ) -> RedisFuture<'a, T> {
        let RedisConnection {
            conn,
            shared,
            index,
            generation,
        } = self;
        observed(shared, *index, *generation, send(conn))
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.observe(|conn| conn.req_packed_command(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.observe(|conn| conn.req_packed_commands(pipeline, offset, count))
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// The pause before the next start-up attempt after one failed `waited`
/// into the window, or None once the window is spent. The last pause is cut
/// short so that the last attempt is made as the window ends: giving up
/// when the next full backoff would overshoot left up to half the window
/// unused (3 s gave up after 1.5 s).
fn startup_pause(waited: Duration, backoff: Duration, window: Duration) -> Option<Duration> {
    let left = window.saturating_sub(waited);
    (!left.is_zero()).then(|| backoff.min(left))
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attempt times a Redis that always refuses at once would see.
    fn attempts(window: Duration) -> Vec<Duration> {
        let mut at = Duration::ZERO;
        let mut backoff = STARTUP_BACKOFF_FIRST;
        let mut times = vec![at];
        while let Some(pause) = startup_pause(at, backoff, window) {
            at += pause;
            times.push(at);
            backoff = (backoff * 2).min(STARTUP_BACKOFF_MAX);
        }
        times
    }

    #[test]
    fn the_last_attempt_is_made_when_the_window_ends() {
        for secs in [0.05, 1.0, 3.0, 10.0, 30.0] {
            let window = Duration::from_secs_f64(secs);
            let times = attempts(window);
            assert_eq!(times.last(), Some(&window), "{secs} s: {times:?}");
        }
        let ms = |t: &[Duration]| t.iter().map(|d| d.as_millis()).collect::<Vec<_>>();
        assert_eq!(
            ms(&attempts(Duration::from_secs(3))),
            [0, 100, 300, 700, 1500, 3000]
        );
    }

    #[test]
    fn a_zero_window_means_one_attempt() {
        assert_eq!(attempts(Duration::ZERO), [Duration::ZERO]);
    }
}
