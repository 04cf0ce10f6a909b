//! Sources that feed the bus. Each runs as one task per path and reconnects
//! for ever; no egress talks to a source directly. Every source goes
//! through one pure [`publisher::Publisher`] (the rules); the modules around
//! it are I/O: `rtsp_pull` (retina), `demo` (the built-in clip), `push`
//! (streams pushed to a server, through [`crate::bus::PublishSink`]).

pub mod backoff;
pub mod demo;
pub mod publisher;
pub mod push;
pub mod rtp_track;
pub mod rtsp_pull;
mod timeline;

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::bus::Stream;

pub use backoff::Backoff;
pub use timeline::Timeline;

/// A source of frames for one [`Stream`].
pub trait Source: Send + 'static {
    /// Runs until the returned future is dropped (the task aborted): connects,
    /// publishes tracks and frames to `stream`, keeps the stream's state
    /// up to date, and reconnects on failure.
    fn run(self: Box<Self>, stream: Arc<Stream>) -> BoxFuture<'static, ()>;
}

/// Returns once `demand` (a stream's reader count, [`Stream::demand`]) has
/// stayed at 0 for `close_after`: a reader arriving in that window restarts
/// the wait. Never returns while the sender lives and readers stay.
pub(crate) async fn no_demand_for(
    demand: &mut tokio::sync::watch::Receiver<usize>,
    close_after: std::time::Duration,
) {
    loop {
        if demand.wait_for(|n| *n == 0).await.is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(close_after) => return,
            r = demand.wait_for(|n| *n > 0) => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod on_demand_tests {
    use std::time::Duration;

    use super::no_demand_for;
    use crate::bus::Stream;

    /// Whether `no_demand_for` has returned after `after` of (paused) time.
    async fn closed_after(
        demand: &mut tokio::sync::watch::Receiver<usize>,
        after: Duration,
    ) -> bool {
        tokio::time::timeout(after, no_demand_for(demand, Duration::from_secs(10)))
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn closes_after_the_last_reader_has_been_gone_for_close_after() {
        let stream = Stream::new("cam", "rtsp://cam");
        let mut demand = stream.demand();
        let sub = stream.subscribe();
        assert_eq!(*demand.borrow(), 1);
        assert!(!closed_after(&mut demand, Duration::from_secs(30)).await);
        drop(sub);
        assert!(!closed_after(&mut demand, Duration::from_secs(9)).await);
        // 9 s gone already in the dropped wait; a fresh wait needs 10 s.
        assert!(closed_after(&mut demand, Duration::from_millis(10_001)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_within_close_after_keeps_it_open() {
        let stream = Stream::new("cam", "rtsp://cam");
        let mut demand = stream.demand();
        let waiting = stream.want();
        drop(waiting);
        let wait = no_demand_for(&mut demand, Duration::from_secs(10));
        tokio::pin!(wait);
        assert!(tokio::time::timeout(Duration::from_secs(8), &mut wait)
            .await
            .is_err());
        let back = stream.subscribe();
        assert!(tokio::time::timeout(Duration::from_secs(20), &mut wait)
            .await
            .is_err());
        drop(back);
        assert!(
            tokio::time::timeout(Duration::from_millis(10_001), &mut wait)
                .await
                .is_ok()
        );
    }
}
