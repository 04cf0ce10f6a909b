//! Bounded fan-out with a GOP cache, shared by the bus (frames) and by egress
//! layers that packetize once and share the result (RTP packets).
//!
//! The publisher never waits: items go into a `tokio::sync::broadcast` ring.
//! A subscriber that falls more than `capacity` items behind is told so and
//! resumes at the next GOP start (keyframe), because anything in between would
//! not decode. A new subscriber first gets the cached items since the last GOP
//! start, so its first picture is a keyframe and arrives at once.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::broadcast;

/// An item and whether it starts a GOP (a video keyframe, or any frame of an
/// audio-only stream).
#[derive(Clone, Debug)]
pub struct Entry<T> {
    pub item: T,
    pub gop_start: bool,
}

struct Inner<T> {
    /// `None` once closed: subscribers then get [`RecvError::Closed`].
    tx: Option<broadcast::Sender<Entry<T>>>,
    /// Items since the last GOP start; `valid` is false when the cache was
    /// overrun (GOP longer than the limits) or no GOP start was seen yet.
    gop: Vec<T>,
    gop_bytes: usize,
    valid: bool,
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
            }),
            limits,
        }
    }

    /// Sends `item` to every subscriber; never waits for any of them.
    pub fn publish(&self, item: T, gop_start: bool) {
        let mut inner = self.lock();
        if gop_start {
            inner.gop.clear();
            inner.gop_bytes = 0;
            inner.valid = true;
        }
        if inner.valid {
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
        if let Some(tx) = &inner.tx {
            // Err only means "no subscribers", which is fine.
            let _ = tx.send(Entry { item, gop_start });
        }
    }

    /// Ends the fan-out: every subscriber, present and future, gets
    /// [`RecvError::Closed`] once it has read what was already sent.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.tx = None;
        inner.gop.clear();
        inner.gop_bytes = 0;
        inner.valid = false;
    }

    /// Drops the GOP cache, e.g. when the source restarts with new tracks.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.gop.clear();
        inner.gop_bytes = 0;
        inner.valid = false;
    }

    /// A new subscriber: it first gets the cached GOP, then live items.
    pub fn subscribe(&self) -> Subscriber<T> {
        let inner = self.lock();
        // Subscribing and copying the cache under one lock: no item is lost
        // or delivered twice between the two.
        let rx = match &inner.tx {
            Some(tx) => tx.subscribe(),
            // A receiver whose sender is already gone: closed at once.
            None => broadcast::channel(1).1,
        };
        let (backlog, resync) = if inner.valid {
            (inner.gop.iter().cloned().collect(), false)
        } else {
            (VecDeque::new(), true)
        };
        Subscriber {
            rx,
            backlog,
            resync,
            lagged: 0,
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
    lagged: u64,
}

impl<T: Clone> Subscriber<T> {
    /// The next item: cached GOP first, then live. After a lag, items up to
    /// the next GOP start are skipped.
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        if let Some(item) = self.backlog.pop_front() {
            return Ok(item);
        }
        loop {
            match self.rx.recv().await {
                Ok(entry) => {
                    if self.resync {
                        if !entry.gop_start {
                            continue;
                        }
                        self.resync = false;
                    }
                    return Ok(entry.item);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lagged += n;
                    self.resync = true;
                }
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
                    if self.resync {
                        if !entry.gop_start {
                            continue;
                        }
                        self.resync = false;
                    }
                    return Ok(Some(entry.item));
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.lagged += n;
                    self.resync = true;
                }
                Err(broadcast::error::TryRecvError::Empty) => return Ok(None),
                Err(broadcast::error::TryRecvError::Closed) => return Err(RecvError::Closed),
            }
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

    #[tokio::test]
    async fn closed_when_publisher_dropped() {
        let f: Fanout<Item> = Fanout::new(4, GopLimits::default());
        let mut s = f.subscribe();
        drop(f);
        assert_eq!(s.recv().await, Err(RecvError::Closed));
    }
}
