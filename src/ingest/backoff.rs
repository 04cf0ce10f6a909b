//! Reconnect delays: fast right after a live camera goes away (a reboot or
//! a network blip is over in seconds and viewers are waiting), slow for a
//! camera that stays down (don't hammer it or fill the log).

use std::time::{Duration, Instant};

/// Delay between attempts in the fast phase.
pub const FAST_DELAY: Duration = Duration::from_millis(250);
/// How long after losing a live camera attempts stay fast.
pub const FAST_WINDOW: Duration = Duration::from_secs(10);
/// A session must have been live this long to start a fast phase when it
/// ends, so a camera that accepts and drops at once is not retried 4 times
/// a second for ever.
pub const MIN_LIVE_FOR_FAST: Duration = Duration::from_secs(2);

/// The reconnect policy of one source. Pure: time is passed in.
///
/// - After a session that was live for at least [`MIN_LIVE_FOR_FAST`]
///   ends: attempts every [`FAST_DELAY`] for [`FAST_WINDOW`], then 1 s,
///   2 s, 4 s, … up to `max`.
/// - Otherwise (down at start, or flapping): 1 s, 2 s, 4 s, … up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
    /// When the last live session ended, if it starts a fast phase.
    lost_live_at: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
    }
}

impl Backoff {
    /// `min`, `max`: the slow phase's first and largest delay.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max,
            lost_live_at: None,
        }
    }

    /// A session that was live for `lived` ended at `now`: the slow phase
    /// starts over, and the fast phase starts if it lived long enough.
    pub fn live_session_ended(&mut self, lived: Duration, now: Instant) {
        self.next = self.min;
        self.lost_live_at = (lived >= MIN_LIVE_FOR_FAST).then_some(now);
    }

    /// The delay before the attempt after one that failed at `now`.
    pub fn next_delay(&mut self, now: Instant) -> Duration {
        if let Some(lost) = self.lost_live_at {
            if now.saturating_duration_since(lost) < FAST_WINDOW {
                return FAST_DELAY;
            }
            self.lost_live_at = None;
        }
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_camera_down_from_the_start_backs_off_to_the_cap() {
        let mut b = Backoff::default();
        let now = Instant::now();
        let secs: Vec<u64> = (0..7).map(|_| b.next_delay(now).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn a_lost_live_camera_is_retried_fast_for_10_s_then_slowly() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        // Down for a while first: the slow phase had grown.
        for _ in 0..5 {
            b.next_delay(t0);
        }
        b.live_session_ended(Duration::from_secs(60), t0);
        let mut t = t0;
        let mut fast = 0;
        loop {
            let d = b.next_delay(t);
            if d != FAST_DELAY {
                // The slow phase starts over at its minimum.
                assert_eq!(d, Duration::from_secs(1));
                break;
            }
            fast += 1;
            t += d;
        }
        assert_eq!(fast, 40, "10 s of attempts every 250 ms");
        assert_eq!(b.next_delay(t), Duration::from_secs(2));
    }

    #[test]
    fn a_camera_that_drops_at_once_is_not_retried_fast() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        b.live_session_ended(Duration::from_millis(300), t0);
        assert_eq!(b.next_delay(t0), Duration::from_secs(1));
        assert_eq!(b.next_delay(t0), Duration::from_secs(2));
    }
}
