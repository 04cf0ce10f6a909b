//! Turns a source's per-session timestamps into the bus's extended,
//! monotonic per-track timeline, across reconnects and camera clock jumps.

use std::time::Instant;

/// Per-track timestamp continuity.
///
/// Within one source session, `elapsed` (RTP timestamp minus the session's
/// start, in clock units) is offset so the track's timeline continues where
/// the previous session stopped, advanced by the wall-clock time in between.
/// A jump backwards or of more than `max_jump` (5 s by default) forward
/// inside a session (a camera that resets or steps its clock) is re-based
/// to one typical frame duration after the last frame, so readers never see
/// time run backwards.
#[derive(Debug, Clone)]
pub struct Timeline {
    clock_rate: u32,
    /// Largest forward step taken as it is, in clock units.
    max_jump: i64,
    offset: Option<i64>,
    last: Option<(i64, Instant)>,
    last_delta: i64,
    /// The next frame is the first of a session: its distance from the last
    /// one is the wall-clock gap, not a clock jump.
    session_start: bool,
}

impl Timeline {
    /// `clock_rate` in Hz; forward jumps above 5 s are re-based.
    pub fn new(clock_rate: u32) -> Self {
        Self::with_max_jump(clock_rate, Some(std::time::Duration::from_secs(5)))
    }

    /// `clock_rate` in Hz; forward jumps above `max_jump` are re-based,
    /// none when `None` (backward ones always are).
    pub fn with_max_jump(clock_rate: u32, max_jump: Option<std::time::Duration>) -> Self {
        let max_jump = max_jump.map_or(i64::MAX, |d| {
            i64::try_from(d.as_millis() * u128::from(clock_rate) / 1000).unwrap_or(i64::MAX)
        });
        Timeline {
            clock_rate,
            max_jump,
            offset: None,
            last: None,
            last_delta: (clock_rate / 25).max(1) as i64,
            session_start: false,
        }
    }

    /// The clock rate in Hz.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// A new source session begins; its first frame is mapped relative to
    /// `session_start` (when PLAY was answered).
    pub fn new_session(&mut self, session_start: Instant) {
        self.offset = self.last.map(|(pts, at)| {
            let gap = session_start.saturating_duration_since(at);
            pts + (gap.as_secs_f64() * self.clock_rate as f64) as i64
        });
        self.session_start = true;
    }

    /// Maps a session-relative timestamp (clock units since the session's
    /// start) received at `now` to the bus timestamp.
    pub fn map(&mut self, elapsed: i64, now: Instant) -> i64 {
        let offset = *self.offset.get_or_insert(0);
        let mut pts = offset.saturating_add(elapsed);
        let first_of_session = std::mem::take(&mut self.session_start);
        if let Some((last, _)) = self.last.filter(|_| !first_of_session || elapsed < 0) {
            let delta = pts.saturating_sub(last);
            if delta <= 0 || delta > self.max_jump {
                if delta == 0 {
                    // Same timestamp twice (e.g. audio frames of 0 length): keep order.
                    pts = last + 1;
                } else {
                    tracing::debug!(delta, "source clock jumped; re-basing the timeline");
                    let target = last + self.last_delta;
                    self.offset = Some(offset + (target - pts));
                    pts = target;
                }
            } else {
                self.last_delta = delta;
            }
        }
        self.last = Some((pts, now));
        pts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn continues_across_sessions_by_wall_clock() {
        let t0 = Instant::now();
        let mut tl = Timeline::new(90_000);
        tl.new_session(t0);
        assert_eq!(tl.map(0, t0), 0);
        assert_eq!(tl.map(3600, t0), 3600);
        // Camera restarts 2 s later; new session timestamps start at 0 again.
        let t1 = t0 + Duration::from_secs(2);
        tl.new_session(t1);
        assert_eq!(tl.map(0, t1), 3600 + 180_000);
        assert_eq!(tl.map(3600, t1), 3600 + 180_000 + 3600);
        // A 10 s outage is a gap, not a clock jump.
        let t2 = t1 + Duration::from_secs(10);
        tl.new_session(t2);
        assert_eq!(tl.map(0, t2), 3600 + 180_000 + 3600 + 900_000);
    }

    #[test]
    fn jumps_are_rebased_and_time_never_runs_backwards() {
        let t0 = Instant::now();
        let mut tl = Timeline::new(90_000);
        tl.new_session(t0);
        let mut prev = i64::MIN;
        for elapsed in [0, 3600, 7200, 1_000_000_000, 1_000_003_600, 100, 3700] {
            let pts = tl.map(elapsed, t0);
            assert!(pts > prev, "{pts} after {prev}");
            prev = pts;
        }
        assert_eq!(prev, 7200 + 4 * 3600);
    }
}
