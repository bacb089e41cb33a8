//! Wall-clock time for the scheduler. Slots are wall-clock instants, timers
//! are tokio instants; this is the one place that converts between them, so
//! tests can run the whole scheduler under tokio's paused clock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Longest single sleep of the timer: after it the timer looks at the wall
/// clock again, so a clock step (NTP, suspend) delays a slot by at most this.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Source of "now".
#[derive(Debug, Clone)]
pub enum Clock {
    /// The system clock.
    System,
    /// Wall time that follows tokio's clock from a fixed start, so that
    /// `tokio::time::pause()` and `advance()` move it; [`Clock::step`] moves
    /// it as NTP or an operator moves a wall clock, without tokio's.
    Tokio {
        /// Wall time at `base`.
        wall: DateTime<Utc>,
        /// Tokio instant at creation.
        base: Instant,
        /// Steps taken so far, in nanoseconds (shared by clones).
        steps: std::sync::Arc<std::sync::atomic::AtomicI64>,
    },
}

impl Clock {
    /// A clock that follows tokio time from `wall` on; for tests.
    pub fn tokio_at(wall: DateTime<Utc>) -> Clock {
        Clock::Tokio {
            wall,
            base: Instant::now(),
            steps: Default::default(),
        }
    }

    /// Steps the wall time by `by` (negative: back), as a clock set by NTP
    /// or by hand; timers in flight are not told. Only a test clock steps:
    /// the system clock is stepped by the system.
    pub fn step(&self, by: chrono::Duration) {
        if let Clock::Tokio { steps, .. } = self {
            let nanos = by.num_nanoseconds().unwrap_or(0);
            steps.fetch_add(nanos, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Current wall time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { wall, base, steps } => {
                let elapsed =
                    chrono::Duration::from_std(base.elapsed()).unwrap_or(chrono::Duration::MAX);
                let stepped = chrono::Duration::nanoseconds(
                    steps.load(std::sync::atomic::Ordering::SeqCst),
                );
                wall.checked_add_signed(elapsed)
                    .and_then(|t| t.checked_add_signed(stepped))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC)
            }
        }
    }

    /// The tokio instant at which to wake for wall time `at`, at most
    /// [`MAX_SLEEP`] ahead.
    pub fn wake_at(&self, at: DateTime<Utc>) -> Instant {
        let ahead = (at - self.now()).to_std().unwrap_or(Duration::ZERO);
        Instant::now() + ahead.min(MAX_SLEEP)
    }
}
