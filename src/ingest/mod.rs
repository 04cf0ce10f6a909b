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
