//! Connection caps of the TCP listeners (RTSP, RTSPS, HTTP/HTTPS, ICE-TCP),
//! and how they are fitted under the process's open-file limit with
//! descriptors kept in reserve for ingest.
//!
//! Each listener has one [`ConnLimiter`]: a total cap (`max_connections`)
//! and an optional per-address cap (`max_connections_per_ip`). The accept
//! loop asks [`ConnLimiter::try_acquire`] right after `accept`; the
//! [`ConnPermit`] it gets is moved into the connection's task and gives the
//! slot back when dropped (the task ends, is aborted, or panics). A refused
//! connection is answered at once without being read ([`refuse`]) and
//! closed; sessions already open are not touched.
//!
//! Camera sockets (RTSP pull over TCP, RTP/RTCP over UDP, reconnects) are
//! opened by ingest, not accepted, so no listener cap covers them: they
//! live in the descriptors left over by [`fit_caps`], the reserve, which a
//! flood of viewers cannot take.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A TCP listener with a connection cap; its name is the `listener` label
/// in `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listener {
    Rtsp,
    Rtsps,
    /// HTTP, or HTTPS when TLS is on (one port).
    Http,
    /// WebRTC over TCP (RFC 6544 passive candidates), on the WebRTC port.
    IceTcp,
}

impl Listener {
    /// The metric label and the name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Rtsp => "rtsp",
            Listener::Rtsps => "rtsps",
            Listener::Http => "http",
            Listener::IceTcp => "ice_tcp",
        }
    }
}

/// Which cap refused a connection; its name is the `reason` label in
/// `/metrics` and the config key that sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// The listener holds `max_connections` connections.
    Total,
    /// The client's address holds `max_connections_per_ip` connections.
    PerAddress,
}

impl RefuseReason {
    pub const ALL: [RefuseReason; 2] = [RefuseReason::Total, RefuseReason::PerAddress];

    pub fn name(self) -> &'static str {
        match self {
            RefuseReason::Total => "max_connections",
            RefuseReason::PerAddress => "max_connections_per_ip",
        }
    }
}

/// A connection [`ConnLimiter::try_acquire`] turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("connection refused: {} reached", reason.name())]
pub struct Refused {
    pub reason: RefuseReason,
}

impl Refused {
    /// What a plain RTSP client is told (RFC 2326 §11.3.14 `503`, §12.31
    /// `Retry-After` in seconds). No `CSeq`: no request was read. RTSP has
    /// no `429`, so the per-address cap answers `503` too.
    pub fn rtsp_answer(self) -> &'static [u8] {
        b"RTSP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
    }

    /// What a plain HTTP client is told: `503` when the listener is full,
    /// `429` (RFC 6585 §4) when this address holds too many connections;
    /// both with `Retry-After: 1` and `Connection: close`.
    pub fn http_answer(self) -> &'static [u8] {
        match self.reason {
            RefuseReason::Total => {
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\
                  Content-Type: text/plain\r\nContent-Length: 21\r\n\r\ntoo many connections\n"
            }
            RefuseReason::PerAddress => {
                b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nConnection: close\r\n\
                  Content-Type: text/plain\r\nContent-Length: 39\r\n\r\ntoo many connections from this address\n"
            }
        }
    }
}

/// At most one warning per listener this often, however many are refused.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Connections held now: in total and per address key ([`address_key`]).
#[derive(Default)]
struct Held {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Warnings sent, for the rate limit.
struct Warned {
    last: Option<Instant>,
    /// Refusals since the last warning.
    since: u64,
}

/// One listener's connection caps and counters. Shared (`Arc`) by its
/// accept loop, the permits it handed out, and `/metrics`.
pub struct ConnLimiter {
    listener: Listener,
    max: usize,
    /// 0 = no per-address cap.
    per_address: usize,
    held: Mutex<Held>,
    refused: [AtomicU64; 2],
    warned: Mutex<Warned>,
}

/// The address a per-address cap counts under: an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`, from a dual-stack socket) is its IPv4 address, and an
/// IPv6 address counts under its /64, the block one host or one LAN usually
/// holds whole (so a client cannot pass the cap by changing its interface
/// identifier).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock left the counts consistent
    // (every update is a single step), so keep going with them.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConnLimiter {
    /// `max` connections at most (at least 1 is kept), and `per_address`
    /// at most from one address ([`address_key`]); `per_address` 0 = no
    /// per-address cap.
    pub fn new(listener: Listener, max: usize, per_address: usize) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            listener,
            max: max.max(1),
            per_address,
            held: Mutex::new(Held::default()),
            refused: [AtomicU64::new(0), AtomicU64::new(0)],
            warned: Mutex::new(Warned {
                last: None,
                since: 0,
            }),
        })
    }

    pub fn listener(&self) -> Listener {
        self.listener
    }

    /// The total cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections held now.
    pub fn current(&self) -> usize {
        lock(&self.held).total
    }

    /// Connections refused since start for `reason`.
    pub fn refused(&self, reason: RefuseReason) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }

    /// A slot for a connection from `ip`, or why not. A refusal is counted
    /// and logged (debug each, a warning at most every 10 s per listener).
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, Refused> {
        let key = address_key(ip);
        let refused = {
            let mut held = lock(&self.held);
            let from_address = held.per_address.get(&key).copied().unwrap_or(0);
            if held.total >= self.max {
                Some(RefuseReason::Total)
            } else if self.per_address > 0 && from_address >= self.per_address {
                Some(RefuseReason::PerAddress)
            } else {
                held.total += 1;
                held.per_address.insert(key, from_address + 1);
                None
            }
        };
        match refused {
            None => Ok(ConnPermit {
                limiter: self.clone(),
                key,
            }),
            Some(reason) => {
                self.note_refused(ip, reason);
                Err(Refused { reason })
            }
        }
    }

    fn note_refused(&self, ip: IpAddr, reason: RefuseReason) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
        let listener = self.listener.name();
        tracing::debug!(%ip, listener, "connection refused: {} reached", reason.name());
        let mut w = lock(&self.warned);
        w.since += 1;
        let now = Instant::now();
        if w.last
            .is_some_and(|t| now.duration_since(t) < WARN_INTERVAL)
        {
            return;
        }
        let cap = match reason {
            RefuseReason::Total => format!("it holds max_connections = {}", self.max),
            RefuseReason::PerAddress => {
                format!("{ip} holds max_connections_per_ip = {}", self.per_address)
            }
        };
        tracing::warn!(
            "{listener} listener: refusing new connections ({} refused in the last {} s; now: {cap}); \
             open connections and sessions go on",
            w.since,
            WARN_INTERVAL.as_secs()
        );
        w.last = Some(now);
        w.since = 0;
    }

    fn release(&self, key: IpAddr) {
        let mut held = lock(&self.held);
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.per_address.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.per_address.remove(&key);
            }
        }
    }
}

/// One accepted connection's slot; given back when dropped (also when the
/// connection's task panics or is aborted).
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    key: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.limiter.release(self.key);
    }
}

impl std::fmt::Debug for ConnPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPermit")
            .field("listener", &self.limiter.listener)
            .field("key", &self.key)
            .finish()
    }
}

/// Answers a refused connection with `answer` (empty: nothing) and closes
/// it, without waiting for anything: one non-blocking write (a fresh
/// socket's send buffer takes a short answer whole), then whatever request
/// bytes already arrived are discarded without blocking, so the close is a
/// FIN rather than a reset that could destroy the answer in flight.
pub fn refuse(stream: tokio::net::TcpStream, answer: &[u8]) {
    if !answer.is_empty() {
        let _ = stream.try_write(answer);
    }
    let mut scratch = [0u8; 4096];
    for _ in 0..4 {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// Every listener's limiter, for `/metrics`.
#[derive(Default)]
pub struct Limiters(pub Vec<Arc<ConnLimiter>>);

impl Limiters {
    /// The limiter of `listener`, if that listener runs.
    pub fn get(&self, listener: Listener) -> Option<&Arc<ConnLimiter>> {
        self.0.iter().find(|l| l.listener == listener)
    }
}

/// Descriptors kept for the process itself whatever the paths: runtime
/// (epoll, eventfds), stdio and log, UDP sockets of RTSP and WebRTC, the
/// listeners, config and certificate files, a demo clip, DNS lookups.
pub const BASE_RESERVE: u64 = 64;
/// Descriptors kept per path for its source: the RTSP TCP connection, an
/// RTP and an RTCP UDP socket per track (video and audio: 4), and room for
/// a reconnect that opens the new connection before the old one is closed.
pub const PATH_RESERVE: u64 = 8;

/// How the open-file limit is shared: each listener's cap and what stays
/// for ingest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdPlan {
    /// Listener → total cap, in the order given.
    pub caps: Vec<(Listener, usize)>,
    /// Descriptors nothing accepted can take.
    pub reserve: u64,
    /// What was scaled down and why, in plain words; `None` when the
    /// configured caps fit.
    pub note: Option<String>,
}

/// Fits the listeners' caps (`wanted`: listener → `max_connections`) under
/// `nofile` (the soft `RLIMIT_NOFILE` after the raise at start), keeping
/// [`BASE_RESERVE`] + [`PATH_RESERVE`] per path for ingest, for `paths`
/// paths (the most there can be: `max_paths`, or more when the file
/// configures more). If caps and reserve don't fit, the caps are scaled
/// down in proportion (each keeps at least 1); the reserve takes at most
/// half of the limit, so a small limit still leaves the listeners room.
pub fn fit_caps(nofile: u64, paths: usize, wanted: &[(Listener, usize)]) -> FdPlan {
    let want_reserve = BASE_RESERVE.saturating_add(PATH_RESERVE.saturating_mul(paths as u64));
    let reserve = want_reserve.min(nofile / 2);
    let budget = nofile.saturating_sub(reserve);
    let total: u64 = wanted.iter().map(|&(_, n)| n as u64).sum();
    let mut notes = Vec::new();
    if reserve < want_reserve {
        notes.push(format!(
            "the open-file limit {nofile} is too low to keep {want_reserve} descriptors for \
             {paths} camera paths; {reserve} are kept"
        ));
    }
    let caps: Vec<(Listener, usize)> = if total <= budget {
        wanted.to_vec()
    } else {
        let caps: Vec<(Listener, usize)> = wanted
            .iter()
            .map(|&(l, n)| {
                // n * budget / total < n, and fits u64: budget < 2^64, n < 2^64,
                // the product is taken in u128.
                let scaled = (n as u128 * budget as u128 / total.max(1) as u128) as usize;
                (l, scaled.max(1))
            })
            .collect();
        let list = caps
            .iter()
            .map(|(l, n)| format!("{} {n}", l.name()))
            .collect::<Vec<_>>()
            .join(", ");
        notes.push(format!(
            "the open-file limit {nofile} cannot hold max_connections on every listener \
             ({total} in all) plus {reserve} kept for cameras, so the caps are lowered to: {list}; \
             raise the limit (e.g. LimitNOFILE= in systemd, --ulimit nofile= in Docker) for more"
        ));
        caps
    };
    FdPlan {
        caps,
        reserve,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

/// The soft open-file limit (`RLIMIT_NOFILE`), or `None` when it can't be
/// read or is unlimited.
pub fn open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    // rlim_t is u64 on 64-bit Linux, narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    Some(lim.rlim_cur as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_permit_gives_its_slot_back_when_dropped() {
        let l = ConnLimiter::new(Listener::Rtsp, 2, 0);
        let a = l.try_acquire(ip("10.0.0.1")).unwrap();
        let _b = l.try_acquire(ip("10.0.0.2")).unwrap();
        assert_eq!(l.current(), 2);
        assert_eq!(
            l.try_acquire(ip("10.0.0.3")).unwrap_err().reason,
            RefuseReason::Total
        );
        drop(a);
        assert_eq!(l.current(), 1);
        assert!(l.try_acquire(ip("10.0.0.3")).is_ok());
        assert_eq!(l.refused(RefuseReason::Total), 1);
        assert_eq!(l.refused(RefuseReason::PerAddress), 0);
    }

    #[test]
    fn a_panicking_task_gives_its_slot_back() {
        let l = ConnLimiter::new(Listener::Http, 1, 0);
        let permit = l.try_acquire(ip("10.0.0.1")).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = permit;
            panic!("connection task fails");
        }));
        assert!(r.is_err());
        assert_eq!(l.current(), 0);
        assert!(l.try_acquire(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn the_per_address_cap_leaves_other_addresses_in() {
        let l = ConnLimiter::new(Listener::Http, 10, 2);
        let a1 = l.try_acquire(ip("10.0.0.1")).unwrap();
        let _a2 = l.try_acquire(ip("10.0.0.1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("10.0.0.1")).unwrap_err().reason,
            RefuseReason::PerAddress
        );
        let _b = l.try_acquire(ip("10.0.0.2")).unwrap();
        drop(a1);
        let _a3 = l.try_acquire(ip("10.0.0.1")).unwrap();
        assert_eq!(l.current(), 3);
        assert_eq!(l.refused(RefuseReason::PerAddress), 1);
    }

    #[test]
    fn the_total_cap_comes_first_when_both_are_reached() {
        let l = ConnLimiter::new(Listener::Rtsp, 2, 2);
        let _a = l.try_acquire(ip("10.0.0.1")).unwrap();
        let _b = l.try_acquire(ip("10.0.0.1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("10.0.0.1")).unwrap_err().reason,
            RefuseReason::Total
        );
        assert_eq!(
            l.try_acquire(ip("10.0.0.2")).unwrap_err().reason,
            RefuseReason::Total
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_its_ipv4_address() {
        let l = ConnLimiter::new(Listener::Rtsp, 10, 1);
        let _v4 = l.try_acquire(ip("192.0.2.7")).unwrap();
        assert_eq!(
            l.try_acquire(ip("::ffff:192.0.2.7")).unwrap_err().reason,
            RefuseReason::PerAddress
        );
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn ipv6_counts_per_64_block() {
        let l = ConnLimiter::new(Listener::Http, 10, 1);
        let _a = l.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert!(l.try_acquire(ip("2001:db8:1:2:ffff::9")).is_err());
        assert!(l.try_acquire(ip("2001:db8:1:3::1")).is_ok());
        drop(_a);
        assert!(l.try_acquire(ip("2001:db8:1:2:ffff::9")).is_ok());
    }

    #[test]
    fn released_addresses_leave_no_entry_behind() {
        let l = ConnLimiter::new(Listener::Http, 1000, 5);
        for i in 0..200u8 {
            drop(l.try_acquire(IpAddr::from([10, 0, 1, i])).unwrap());
        }
        assert_eq!(l.current(), 0);
        assert!(lock(&l.held).per_address.is_empty());
    }

    #[test]
    fn a_zero_cap_is_kept_at_one() {
        let l = ConnLimiter::new(Listener::IceTcp, 0, 0);
        assert_eq!(l.max(), 1);
        assert!(l.try_acquire(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn answers_are_complete_messages() {
        for reason in RefuseReason::ALL {
            let r = Refused { reason };
            for answer in [r.http_answer(), r.rtsp_answer()] {
                let text = std::str::from_utf8(answer).unwrap();
                let (head, body) = text.split_once("\r\n\r\n").unwrap();
                assert!(head.contains("\r\nRetry-After: 1"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(len, body.len(), "{text}");
            }
        }
        assert!(Refused {
            reason: RefuseReason::PerAddress
        }
        .http_answer()
        .starts_with(b"HTTP/1.1 429 "));
        assert!(Refused {
            reason: RefuseReason::Total
        }
        .http_answer()
        .starts_with(b"HTTP/1.1 503 "));
    }

    const ALL: [(Listener, usize); 4] = [
        (Listener::Rtsp, 4096),
        (Listener::Rtsps, 4096),
        (Listener::Http, 4096),
        (Listener::IceTcp, 4096),
    ];

    #[test]
    fn caps_that_fit_are_kept() {
        let plan = fit_caps(1 << 20, 1000, &ALL);
        assert_eq!(plan.caps, ALL);
        assert_eq!(plan.reserve, BASE_RESERVE + PATH_RESERVE * 1000);
        assert_eq!(plan.note, None);
    }

    #[test]
    fn caps_are_scaled_down_under_the_limit_with_the_reserve_kept() {
        // A hard limit of 4096 (soft raised to it at start), 100 paths.
        let plan = fit_caps(4096, 100, &ALL);
        let reserve = BASE_RESERVE + PATH_RESERVE * 100;
        assert_eq!(plan.reserve, reserve);
        let sum: u64 = plan.caps.iter().map(|&(_, n)| n as u64).sum();
        assert!(sum + reserve <= 4096, "{plan:?}");
        // Equal wishes, equal shares: (4096 - 864) / 4 = 808.
        assert!(plan.caps.iter().all(|&(_, n)| n == 808), "{plan:?}");
        let note = plan.note.unwrap();
        assert!(note.contains("rtsp 808") && note.contains("4096"), "{note}");
    }

    #[test]
    fn scaling_keeps_the_proportions() {
        let plan = fit_caps(1000, 0, &[(Listener::Http, 3000), (Listener::Rtsp, 1000)]);
        // Budget 1000 - 64 = 936, shared 3:1.
        assert_eq!(plan.caps, [(Listener::Http, 702), (Listener::Rtsp, 234)]);
    }

    #[test]
    fn the_reserve_takes_at_most_half_of_a_small_limit() {
        let plan = fit_caps(256, 1000, &ALL);
        assert_eq!(plan.reserve, 128);
        assert!(plan.caps.iter().all(|&(_, n)| n == 32), "{plan:?}");
        assert!(plan.note.unwrap().contains("too low"));
        // Even a tiny limit leaves each listener one connection.
        let plan = fit_caps(3, 10, &ALL);
        assert!(plan.caps.iter().all(|&(_, n)| n == 1), "{plan:?}");
    }
}
