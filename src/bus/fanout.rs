//! Bounded fan-out with a GOP cache, shared by the bus (track sets and
//! frames) and by egress layers that packetize once and share the result
//! (RTP packets).
//!
//! The publisher never waits: items go into a `tokio::sync::broadcast` ring.
//! A subscriber that falls more than `capacity` items behind is told so and
//! resumes at the next GOP start (keyframe), because anything in between would
//! not decode. A new subscriber first gets the cached items since the last GOP
//! start, so its first picture is a keyframe and arrives at once.
//!
//! Headers: a fan-out may also carry *header* items (the bus's track sets),
//! which say how the items after them are to be read. They travel in the same
//! order as the other items, and every subscriber sees the header in force
//! before any item it applies to: a new subscriber gets the current header
//! first, and one that lagged past a header change gets the header in force
//! at the GOP start it resumes at, just before it. Headers are never skipped
//! while resyncing.
//!
//! Leading items: an item published with [`Fanout::publish_leading`] (an
//! H.265 RASL picture after a CRA) belongs to the GOP before it as much as
//! to its own, so a subscriber that *starts* at that GOP's start (from the
//! cache, or resyncing) skips it: its decoder has nothing to decode it
//! from. A subscriber that was already reading when the GOP started gets
//! it like any other item.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};

/// One item in the ring.
#[derive(Clone, Debug)]
struct Entry<T> {
    item: T,
    /// The item starts a GOP (a video keyframe, or any frame of an
    /// audio-only stream).
    gop_start: bool,
    /// Skipped by subscribers that started at this GOP's start.
    leading: bool,
    /// `Some(n)`: the item is header number `n`.
    header: Option<u64>,
    /// On GOP starts only: the header in force, for a subscriber that
    /// resumes here after a lag and may have missed it.
    in_force: Option<(u64, T)>,
}

struct Inner<T> {
    /// `None` once closed: subscribers then get [`RecvError::Closed`].
    tx: Option<broadcast::Sender<Entry<T>>>,
    /// Items since the last GOP start, headers published since then
    /// included in their place; `valid` is false when the cache was
    /// overrun (GOP longer than the limits) or no GOP start was seen yet.
    /// Leading items are not cached: every subscriber of the cache starts
    /// at its GOP start.
    gop: Vec<T>,
    gop_bytes: usize,
    valid: bool,
    /// The header in force at the cached GOP's start.
    gop_header: Option<T>,
    /// The current header and its number (numbers start at 1).
    header: Option<(u64, T)>,
}

/// Limits of the GOP cache: a camera with a 60 s GOP must not pin gigabytes.
#[derive(Clone, Copy, Debug)]
pub struct GopLimits {
    pub max_items: usize,
    pub max_bytes: usize,
}

impl Default for GopLimits {
    fn default() -> Self {
        GopLimits {
            max_items: 4096,
            max_bytes: 32 << 20,
        }
    }
}

/// Something with a size, so the GOP cache can be bounded in bytes.
pub trait ByteLen {
    /// Approximate payload size in bytes.
    fn byte_len(&self) -> usize;
}

/// Broadcast with a GOP cache. See the module docs.
pub struct Fanout<T> {
    inner: Mutex<Inner<T>>,
    limits: GopLimits,
    /// Subscribers plus [`DemandGuard`]s alive: the one count of who wants
    /// this fan-out's items (on-demand sources start and stop on it).
    demand: Arc<watch::Sender<usize>>,
}

/// One unit of demand on a [`Fanout`], given back when dropped. Every
/// [`Subscriber`] holds one; a reader waiting for a stream to go live holds
/// one without subscribing.
pub struct DemandGuard(Arc<watch::Sender<usize>>);

impl DemandGuard {
    fn new(demand: &Arc<watch::Sender<usize>>) -> Self {
        demand.send_modify(|n| *n = n.saturating_add(1));
        DemandGuard(demand.clone())
    }
}

impl Drop for DemandGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl<T: Clone + ByteLen> Fanout<T> {
    /// `capacity` is the number of items a subscriber may fall behind before
    /// it lags and skips to the next GOP start.
    pub fn new(capacity: usize, limits: GopLimits) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Fanout {
            inner: Mutex::new(Inner {
                tx: Some(tx),
                gop: Vec::new(),
                gop_bytes: 0,
                valid: false,
                gop_header: None,
                header: None,
            }),
            limits,
            demand: Arc::new(watch::channel(0).0),
        }
    }

    /// The demand count (subscribers and [`DemandGuard`]s), changing as
    /// they come and go.
    pub fn demand(&self) -> watch::Receiver<usize> {
        self.demand.subscribe()
    }

    /// Demand without subscribing, until the guard is dropped.
    pub fn want(&self) -> DemandGuard {
        DemandGuard::new(&self.demand)
    }

    /// Forgets the cached GOP (the source stopped: its pictures are stale
    /// for a reader that comes later); the header is kept.
    pub fn forget_gop(&self) {
        let mut inner = self.lock();
        inner.gop.clear();
        inner.gop_bytes = 0;
        inner.valid = false;
        inner.gop_header = None;
    }

    /// Sends `item` to every subscriber; never waits for any of them.
    pub fn publish(&self, item: T, gop_start: bool) {
        self.send(item, gop_start, false);
    }

    /// Sends a leading item (see the module docs): one that subscribers
    /// starting at the current GOP start skip. Never waits.
    pub fn publish_leading(&self, item: T) {
        self.send(item, false, true);
    }

    fn send(&self, item: T, gop_start: bool, leading: bool) {
        let mut inner = self.lock();
        if gop_start {
            inner.gop.clear();
            inner.gop_bytes = 0;
            inner.valid = true;
            inner.gop_header = inner.header.as_ref().map(|(_, h)| h.clone());
        }
        if inner.valid && !leading {
            let len = item.byte_len();
            if inner.gop.len() >= self.limits.max_items
                || inner.gop_bytes + len > self.limits.max_bytes
            {
                // Too long a GOP to cache: new subscribers wait for the next keyframe.
                inner.gop.clear();
                inner.gop_bytes = 0;
                inner.valid = false;
            } else {
                inner.gop.push(item.clone());
                inner.gop_bytes += len;
            }
        }
        let in_force = if gop_start {
            inner.header.clone()
        } else {
            None
        };
        if let Some(tx) = &inner.tx {
            // Err only means "no subscribers", which is fine.
            let _ = tx.send(Entry {
                item,
                gop_start,
                leading,
                header: None,
                in_force,
            });
        }
    }

    /// Makes a new header current and sends it to every subscriber, in
    /// order with the items around it. `make` gets the current header and
    /// returns the new one with whether the GOP cache must be dropped (the
    /// cached items cannot be read with the new header: new subscribers
    /// then wait for the next GOP start), or `None` to change nothing, and
    /// a result passed back to the caller. Deciding under the fan-out's
    /// lock keeps concurrent header changes from interleaving.
    pub fn publish_header<R>(&self, make: impl FnOnce(Option<&T>) -> (Option<(T, bool)>, R)) -> R {
        let mut inner = self.lock();
        let (change, result) = make(inner.header.as_ref().map(|(_, h)| h));
        let Some((header, reset)) = change else {
            return result;
        };
        let number = inner.header.as_ref().map_or(1, |(n, _)| n + 1);
        inner.header = Some((number, header.clone()));
        if reset {
            inner.gop.clear();
            inner.gop_bytes = 0;
            inner.valid = false;
        } else if inner.valid {
            // Headers are small and few: not counted against the limits.
            inner.gop.push(header.clone());
        }
        if let Some(tx) = &inner.tx {
            let _ = tx.send(Entry {
                item: header,
                gop_start: false,
                leading: false,
                header: Some(number),
                in_force: None,
            });
        }
        result
    }

    /// The current header, if any was published.
    pub fn header(&self) -> Option<T> {
        self.lock().header.as_ref().map(|(_, h)| h.clone())
    }

    /// Ends the fan-out: every subscriber, present and future, gets
    /// [`RecvError::Closed`] once it has read what was already sent.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.tx = None;
        inner.gop.clear();
        inner.gop_bytes = 0;
        inner.valid = false;
        inner.gop_header = None;
        inner.header = None;
    }

    /// A new subscriber: it first gets the current header (if any), then
    /// the cached GOP, then live items.
    pub fn subscribe(&self) -> Subscriber<T> {
        let inner = self.lock();
        // Subscribing and copying the cache under one lock: no item is lost
        // or delivered twice between the two.
        let rx = match &inner.tx {
            Some(tx) => tx.subscribe(),
            // A receiver whose sender is already gone: closed at once.
            None => broadcast::channel(1).1,
        };
        let mut backlog = VecDeque::new();
        let resync = if inner.valid {
            // The GOP holds the headers published since its start, so the
            // last header in the backlog is the current one.
            backlog.extend(inner.gop_header.iter().cloned());
            backlog.extend(inner.gop.iter().cloned());
            false
        } else {
            backlog.extend(inner.header.iter().map(|(_, h)| h.clone()));
            true
        };
        Subscriber {
            rx,
            backlog,
            resync,
            // From the cache: it starts at the cached GOP's start.
            skip_leading: !resync,
            lagged: 0,
            header: inner.header.as_ref().map(|(n, _)| *n),
            _demand: DemandGuard::new(&self.demand),
        }
    }

    /// The cached GOP (items since the last GOP start), oldest first.
    pub fn gop_snapshot(&self) -> Vec<T> {
        let inner = self.lock();
        if inner.valid {
            inner.gop.clone()
        } else {
            Vec::new()
        }
    }

    /// Number of live subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.lock().tx.as_ref().map_or(0, |tx| tx.receiver_count())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // A panic while holding this lock leaves only plain data behind: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why [`Subscriber::recv`] returned no item.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The publisher is gone (the stream was removed).
    #[error("stream closed")]
    Closed,
}

/// One reader's position in a [`Fanout`].
pub struct Subscriber<T> {
    rx: broadcast::Receiver<Entry<T>>,
    backlog: VecDeque<T>,
    resync: bool,
    /// It started at the current GOP's start: leading items are skipped
    /// until the next GOP start.
    skip_leading: bool,
    lagged: u64,
    /// Number of the last header this subscriber was given.
    header: Option<u64>,
    _demand: DemandGuard,
}

impl<T: Clone> Subscriber<T> {
    /// The next item: current header and cached GOP first, then live.
    /// After a lag, items up to the next GOP start are skipped (headers
    /// excepted), and the header in force there comes first if this
    /// subscriber has not had it.
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        if let Some(item) = self.backlog.pop_front() {
            return Ok(item);
        }
        loop {
            match self.rx.recv().await {
                Ok(entry) => {
                    if let Some(item) = self.accept(entry) {
                        return Ok(item);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => self.lag(n),
                Err(broadcast::error::RecvError::Closed) => return Err(RecvError::Closed),
            }
        }
    }

    /// The next item if one is ready now, without waiting: `Ok(None)` when
    /// there is none yet. Same order and lag handling as [`Self::recv`], so
    /// a reader can take everything that queued up in one go.
    pub fn try_recv(&mut self) -> Result<Option<T>, RecvError> {
        if let Some(item) = self.backlog.pop_front() {
            return Ok(Some(item));
        }
        loop {
            match self.rx.try_recv() {
                Ok(entry) => {
                    if let Some(item) = self.accept(entry) {
                        return Ok(Some(item));
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.lag(n),
                Err(broadcast::error::TryRecvError::Empty) => return Ok(None),
                Err(broadcast::error::TryRecvError::Closed) => return Err(RecvError::Closed),
            }
        }
    }

    fn lag(&mut self, n: u64) {
        self.lagged += n;
        self.resync = true;
    }

    /// What `entry` gives this subscriber, in order: `None` to skip it.
    fn accept(&mut self, entry: Entry<T>) -> Option<T> {
        if let Some(n) = entry.header {
            self.header = Some(n);
            return Some(entry.item);
        }
        if self.resync {
            if !entry.gop_start {
                return None;
            }
            self.resync = false;
            self.skip_leading = true;
        } else if entry.gop_start {
            self.skip_leading = false;
        }
        if entry.leading && self.skip_leading {
            return None;
        }
        match entry.in_force {
            // A header this subscriber missed (lost in a lag): it first.
            Some((n, header)) if self.header != Some(n) => {
                self.header = Some(n);
                self.backlog.push_back(entry.item);
                Some(header)
            }
            _ => Some(entry.item),
        }
    }

    /// Items this subscriber missed because it fell behind.
    pub fn lagged(&self) -> u64 {
        self.lagged
    }

    /// Whether the subscriber is waiting for a GOP start (no cached GOP at
    /// subscription time, or after a lag).
    pub fn is_resyncing(&self) -> bool {
        self.resync && self.backlog.is_empty()
    }

    /// Items already queued for this subscriber (cached GOP not yet taken).
    pub fn backlog(&self) -> &VecDeque<T> {
        &self.backlog
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Item(u32, bool);
    impl ByteLen for Item {
        fn byte_len(&self) -> usize {
            10
        }
    }

    fn publish(f: &Fanout<Item>, n: u32, key: bool) {
        f.publish(Item(n, key), key);
    }

    #[tokio::test]
    async fn new_subscriber_starts_at_cached_keyframe() {
        let f = Fanout::new(16, GopLimits::default());
        publish(&f, 1, false); // before any keyframe: not cached
        publish(&f, 2, true);
        publish(&f, 3, false);
        let mut s = f.subscribe();
        publish(&f, 4, false);
        assert_eq!(s.recv().await.unwrap(), Item(2, true));
        assert_eq!(s.recv().await.unwrap(), Item(3, false));
        assert_eq!(s.recv().await.unwrap(), Item(4, false));
    }

    #[tokio::test]
    async fn subscriber_without_cache_waits_for_keyframe() {
        let f = Fanout::new(16, GopLimits::default());
        publish(&f, 1, false);
        let mut s = f.subscribe();
        publish(&f, 2, false);
        publish(&f, 3, true);
        assert_eq!(s.recv().await.unwrap(), Item(3, true));
    }

    #[tokio::test]
    async fn lagging_subscriber_resumes_at_next_keyframe() {
        let f = Fanout::new(4, GopLimits::default());
        publish(&f, 0, true);
        let mut s = f.subscribe();
        for n in 1..=10 {
            publish(&f, n, false);
        }
        publish(&f, 11, false);
        publish(&f, 12, true);
        publish(&f, 13, false);
        // backlog first
        assert_eq!(s.recv().await.unwrap(), Item(0, true));
        assert_eq!(s.recv().await.unwrap(), Item(12, true));
        assert!(s.lagged() > 0);
        assert_eq!(s.recv().await.unwrap(), Item(13, false));
    }

    #[tokio::test]
    async fn oversized_gop_is_not_cached() {
        let f = Fanout::new(
            64,
            GopLimits {
                max_items: 3,
                max_bytes: 1000,
            },
        );
        publish(&f, 1, true);
        for n in 2..6 {
            publish(&f, n, false);
        }
        assert!(f.gop_snapshot().is_empty());
        let s = f.subscribe();
        assert!(s.is_resyncing());
    }

    #[tokio::test]
    async fn close_ends_present_and_future_subscribers() {
        let f = Fanout::new(4, GopLimits::default());
        let mut s = f.subscribe();
        publish(&f, 1, true);
        f.close();
        assert_eq!(s.recv().await.unwrap(), Item(1, true));
        assert_eq!(s.recv().await, Err(RecvError::Closed));
        assert_eq!(f.subscribe().recv().await, Err(RecvError::Closed));
    }

    #[tokio::test]
    async fn try_recv_takes_what_is_ready_in_order_and_resyncs_after_lag() {
        let f = Fanout::new(4, GopLimits::default());
        publish(&f, 0, true);
        let mut s = f.subscribe();
        assert_eq!(s.try_recv(), Ok(Some(Item(0, true)))); // cached GOP
        assert_eq!(s.try_recv(), Ok(None));
        publish(&f, 1, false);
        publish(&f, 2, false);
        assert_eq!(s.try_recv(), Ok(Some(Item(1, false))));
        assert_eq!(s.try_recv(), Ok(Some(Item(2, false))));
        assert_eq!(s.try_recv(), Ok(None));
        for n in 3..10 {
            publish(&f, n, false);
        }
        publish(&f, 10, true);
        assert_eq!(s.try_recv(), Ok(Some(Item(10, true))));
        assert!(s.lagged() > 0);
        f.close();
        assert_eq!(s.try_recv(), Err(RecvError::Closed));
    }

    fn header(f: &Fanout<Item>, n: u32, reset: bool) {
        f.publish_header(|_| (Some((Item(n, false), reset)), ()));
    }

    #[tokio::test]
    async fn header_comes_first_and_in_order_with_the_gop() {
        let f = Fanout::new(16, GopLimits::default());
        header(&f, 100, false);
        publish(&f, 1, true);
        publish(&f, 2, false);
        header(&f, 101, false); // mid-GOP change, e.g. a new SPS
        publish(&f, 3, false);
        let mut s = f.subscribe();
        publish(&f, 4, false);
        let got: Vec<u32> = [(); 6]
            .iter()
            .map(|_| s.try_recv().unwrap().unwrap().0)
            .collect();
        assert_eq!(got, [100, 1, 2, 101, 3, 4]);
        assert_eq!(f.header(), Some(Item(101, false)));
    }

    #[tokio::test]
    async fn a_reset_header_drops_the_gop_and_is_delivered_alone() {
        let f = Fanout::new(16, GopLimits::default());
        header(&f, 100, false);
        publish(&f, 1, true);
        let mut old = f.subscribe();
        header(&f, 200, true);
        publish(&f, 2, false); // not a GOP start: new subscribers skip it
        let mut new = f.subscribe();
        publish(&f, 3, true);
        assert_eq!(old.recv().await.unwrap(), Item(100, false));
        assert_eq!(old.recv().await.unwrap(), Item(1, true));
        assert_eq!(old.recv().await.unwrap(), Item(200, false));
        assert_eq!(old.recv().await.unwrap(), Item(2, false));
        assert_eq!(new.recv().await.unwrap(), Item(200, false));
        assert_eq!(new.recv().await.unwrap(), Item(3, true));
    }

    #[tokio::test]
    async fn a_lagged_subscriber_gets_the_missed_header_before_its_keyframe() {
        let f = Fanout::new(4, GopLimits::default());
        header(&f, 100, false);
        publish(&f, 0, true);
        let mut s = f.subscribe();
        assert_eq!(s.recv().await.unwrap(), Item(100, false));
        assert_eq!(s.recv().await.unwrap(), Item(0, true));
        header(&f, 101, false); // lost in the lag below
        for n in 1..=10 {
            publish(&f, n, false);
        }
        publish(&f, 11, true);
        publish(&f, 12, false);
        assert_eq!(s.recv().await.unwrap(), Item(101, false));
        assert_eq!(s.recv().await.unwrap(), Item(11, true));
        assert!(s.lagged() > 0);
        assert_eq!(s.recv().await.unwrap(), Item(12, false));
    }

    #[tokio::test]
    async fn a_header_is_not_repeated_to_a_subscriber_that_had_it() {
        let f = Fanout::new(4, GopLimits::default());
        header(&f, 100, false);
        publish(&f, 0, true);
        let mut s = f.subscribe();
        for n in 1..=10 {
            publish(&f, n, false);
        }
        publish(&f, 11, true);
        let got: Vec<u32> = [(); 3]
            .iter()
            .map(|_| s.try_recv().unwrap().unwrap().0)
            .collect();
        assert_eq!(got, [100, 0, 11]);
        assert_eq!(s.try_recv(), Ok(None));
    }

    #[tokio::test]
    async fn leading_items_are_skipped_only_by_subscribers_that_start_at_their_gop() {
        let f = Fanout::new(16, GopLimits::default());
        publish(&f, 0, true); // IDR
        let mut early = f.subscribe();
        publish(&f, 1, false);
        publish(&f, 2, true); // CRA
        f.publish_leading(Item(3, false)); // RASL of the CRA
        publish(&f, 4, false);
        let mut cached = f.subscribe(); // from the cached GOP: 2, 4
                                        // As after a lag: waiting for the next GOP start.
        let mut resyncing = f.subscribe();
        resyncing.backlog.clear();
        resyncing.resync = true;
        resyncing.skip_leading = false;
        f.publish_leading(Item(5, false)); // another RASL of the CRA
        publish(&f, 6, true); // next CRA
        f.publish_leading(Item(7, false)); // its RASL
        let all = |s: &mut Subscriber<Item>| {
            std::iter::from_fn(|| s.try_recv().ok().flatten())
                .map(|i| i.0)
                .collect::<Vec<_>>()
        };
        // Decoding since the IDR: every picture decodes.
        assert_eq!(all(&mut early), [0, 1, 2, 3, 4, 5, 6, 7]);
        // Started at the CRA: its RASL pictures are skipped, the next
        // CRA's are not (the decoder has the pictures they refer to).
        assert_eq!(all(&mut cached), [2, 4, 6, 7]);
        // Resynced at the second CRA: its RASL picture is skipped.
        assert_eq!(all(&mut resyncing), [6]);
    }

    #[tokio::test]
    async fn closed_when_publisher_dropped() {
        let f: Fanout<Item> = Fanout::new(4, GopLimits::default());
        let mut s = f.subscribe();
        drop(f);
        assert_eq!(s.recv().await, Err(RecvError::Closed));
    }
}
