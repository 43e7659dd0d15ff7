//! [`Backoff`]: how long to wait before reconnecting, with the server's `retry:` as the floor.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Capped exponential backoff with jitter.
///
/// The n-th consecutive failure waits `base * 2^(n-1)`, where `base` is the server's latest
/// `retry:` or else the configured initial delay (from the second failure in a row, at least
/// the initial delay), capped at `max` (but never below the server's `retry:`), plus up to a
/// quarter of that at random so that many clients cut at once do not come back at once. A
/// server's `retry:` is therefore never cut short.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    rng: XorShift,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            rng: XorShift::from_time(),
        }
    }

    /// The delay before the reconnection that follows `failures` consecutive failures (1 for
    /// the first), given the server's latest `retry:`.
    pub(crate) fn delay(&mut self, failures: u32, retry: Option<Duration>) -> Duration {
        let mut base = retry.unwrap_or(self.initial);
        if failures > 1 {
            // A `retry:` shorter than the initial delay (`retry: 0`) is honoured once, but
            // failures in a row back off from the initial delay: no reconnection storm.
            base = base.max(self.initial);
        }
        let cap = self.max.max(base);
        let doublings = failures.saturating_sub(1).min(31);
        let delay = base.saturating_mul(1 << doublings).min(cap);
        let jitter = delay / 4;
        // A fraction of the jitter, in 1/1024ths: no float, no overflow.
        let fraction = u32::try_from(self.rng.next() % 1025).unwrap_or(0);
        let extra = jitter
            .checked_mul(fraction)
            .map_or(jitter, |scaled| scaled / 1024);
        delay.saturating_add(extra)
    }
}

/// A tiny xorshift64 generator: plenty for spreading reconnections, never for secrets.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    /// Seeded from the clock, so processes and streams started apart differ.
    fn from_time() -> XorShift {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        // Fold the 128-bit count into a non-zero seed (xorshift stays at zero forever).
        XorShift((nanos as u64 ^ (nanos >> 64) as u64) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_with_at_most_a_quarter_of_jitter() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS);
        for (failures, floor) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            for _ in 0..100 {
                let delay = backoff.delay(failures, None);
                assert!(delay >= floor * MS, "{failures}: {delay:?}");
                assert!(delay <= floor * MS * 5 / 4, "{failures}: {delay:?}");
            }
        }
    }

    #[test]
    fn the_servers_retry_is_the_base_and_never_cut_by_the_cap() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS);
        let delay = backoff.delay(1, Some(5000 * MS));
        assert!((5000 * MS..=6250 * MS).contains(&delay), "{delay:?}");
        let delay = backoff.delay(1, Some(Duration::ZERO));
        assert_eq!(delay, Duration::ZERO);
        // `retry: 0` does not make failures in a row a tight loop.
        let delay = backoff.delay(2, Some(Duration::ZERO));
        assert!((200 * MS..=250 * MS).contains(&delay), "{delay:?}");
        // No overflow on absurd values.
        let huge = Duration::from_secs(u64::MAX);
        assert!(backoff.delay(u32::MAX, Some(huge)) >= huge);
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut backoff = Backoff::new(1000 * MS, 1000 * MS);
        let delays: std::collections::HashSet<_> =
            (0..50).map(|_| backoff.delay(1, None)).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
