//! The managed Redis pool: opened and checked before the server takes calls,
//! every connection named so operators can find it in `CLIENT LIST`, and
//! closed (each connection sent QUIT, so Redis has forgotten it by the time
//! [`RedisPool::close`] returns) after the last runner stopped.

use std::time::Duration;

use deadpool_redis::{
    Manager, Pool, Runtime,
    redis::{self, AsyncConnectionConfig, aio::MultiplexedConnection},
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
    /// Connections in the pool.
    pub size: usize,
    /// Bound of opening one connection.
    pub connect_timeout: Duration,
    /// Bound of one reply.
    pub response_timeout: Duration,
    /// Bound of waiting for a free connection.
    pub checkout_timeout: Duration,
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
        source: redis::RedisError,
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
    /// The pool could not be built.
    #[error("building the Redis pool failed: {reason}")]
    Build {
        /// Why.
        reason: String,
    },
}

/// A pool of named, multiplexed Redis connections. Cheap to clone.
#[derive(Clone)]
pub struct RedisPool {
    pool: Pool,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl RedisPool {
    /// Opens the pool and checks it with a PING, retrying with backoff for
    /// `startup_window` before giving up.
    pub async fn open(settings: PoolSettings) -> Result<RedisPool, PoolError> {
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout));
        let manager = Manager::new_with_config(settings.url.as_str(), connection_config)
            .map_err(|source| PoolError::InvalidUrl { source })?;
        let client_name = settings.client_name.clone();
        let pool = Pool::builder(manager)
            .max_size(settings.size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.checkout_timeout))
            .create_timeout(Some(settings.connect_timeout + settings.response_timeout))
            .recycle_timeout(Some(settings.response_timeout))
            // redis-rs has no connection-name option: name each connection as
            // it is made, which also covers every reconnect.
            .post_create(deadpool_redis::Hook::async_fn(move |conn, _| {
                let name = client_name.clone();
                Box::pin(async move {
                    redis::cmd("CLIENT")
                        .arg("SETNAME")
                        .arg(&name)
                        .query_async::<()>(conn)
                        .await
                        .map_err(deadpool_redis::HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| PoolError::Build {
                reason: e.to_string(),
            })?;
        let pool = RedisPool { pool };

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

    /// A connection, waiting at most the checkout timeout.
    pub async fn get(&self) -> Result<deadpool_redis::Connection, deadpool_redis::PoolError> {
        self.pool.get().await
    }

    async fn ping(&self) -> Result<(), String> {
        let mut conn = self.get().await.map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut *conn)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Closes the pool: later checkouts fail, and each idle connection is
    /// sent QUIT so that Redis has dropped it when this returns (dropping
    /// a multiplexed connection only closes its socket later, from a
    /// background task). Call after every user of the pool has stopped.
    pub async fn close(&self) {
        let idle: Vec<MultiplexedConnection> = self.pool.retain(|_, _| false).removed;
        self.pool.close();
        // All at once, so closing takes at most QUIT_TIMEOUT whatever the
        // pool size: shutdown's documented bound counts on it.
        futures::future::join_all(idle.into_iter().map(|mut conn| async move {
            // QUIT is deprecated in Redis 7.2 but still served; an error means
            // the connection is already gone, which is what we want.
            let quit = redis::cmd("QUIT");
            let _ = tokio::time::timeout(QUIT_TIMEOUT, quit.query_async::<()>(&mut conn)).await;
        }))
        .await;
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
