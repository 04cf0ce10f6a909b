//! Slows password guessing: every failed login from an address adds
//! [`PENALTY`] to that address's debt, and its next answers wait the debt
//! out, so parallel connections don't help; beyond [`MAX_DEBT`] attempts are
//! refused unchecked until the debt has run down. Sans-IO: time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Added per failed login.
pub const PENALTY: Duration = Duration::from_secs(1);
/// Debt beyond which attempts are refused without checking.
pub const MAX_DEBT: Duration = Duration::from_secs(10);
/// Addresses remembered at most; the oldest debts are dropped first.
const MAX_ENTRIES: usize = 10_000;

/// Per-address failure debt.
#[derive(Default)]
pub struct Throttle {
    /// Address → when its debt is paid off.
    until: Mutex<HashMap<IpAddr, Instant>>,
}

impl Throttle {
    /// Whether `ip` may try at all now (`false` = refuse unchecked).
    pub fn may_try(&self, ip: IpAddr, now: Instant) -> bool {
        let map = self.until.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&ip)
            .is_none_or(|until| until.saturating_duration_since(now) <= MAX_DEBT)
    }

    /// Records a failed login from `ip`; returns how long to hold the answer.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Duration {
        let mut map = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, until| *until > now);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        let until = map.entry(ip).or_insert(now);
        *until = (*until).max(now) + PENALTY;
        until.saturating_duration_since(now)
    }

    /// A successful login clears the address's debt.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut map = self.until.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_grows_per_failure_and_runs_down() {
        let t = Throttle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let now = Instant::now();
        assert_eq!(t.failed(a, now), PENALTY);
        assert_eq!(t.failed(a, now), PENALTY * 2, "parallel failures queue up");
        assert_eq!(t.failed(b, now), PENALTY, "other addresses are not slowed");
        for _ in 0..9 {
            t.failed(a, now);
        }
        assert!(!t.may_try(a, now), "11 s of debt: refused unchecked");
        assert!(t.may_try(b, now));
        assert!(t.may_try(a, now + Duration::from_secs(2)));
        t.succeeded(a);
        assert!(t.may_try(a, now));
    }
}
