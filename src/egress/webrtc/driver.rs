//! The socket task: one UDP socket and one ICE-TCP listener for all WHEP
//! viewers, and every viewer's [`Session`] driven from here.
//!
//! Inputs, each handled to completion before the next (no per-viewer task,
//! no locks around str0m): datagrams and ICE-TCP frames (demultiplexed by
//! [`Demux`]: STUN ufrag, then remote address, both hash lookups), bus frames
//! (one subscriber per connected viewer, merged with `SelectAll`, which only
//! polls the subscribers that were woken), commands from the HTTP handlers,
//! and timers (a min-heap of each session's next timeout, stale entries
//! skipped lazily).
//!
//! Nothing here waits on a viewer: UDP sends are non-blocking and a packet
//! that does not fit in the socket buffer is dropped (str0m's NACK/RTX
//! repairs it); each ICE-TCP connection has a bounded queue, and a full
//! queue drops packets for that viewer only. A viewer that stops answering
//! is closed by its session at the ICE consent timeout and everything it
//! held (session, subscriber, demux entries, TCP connection) is freed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{AbortHandle, BoxStream, SelectAll};
use futures::StreamExt;
use str0m::net::{Protocol, Transmit};
use str0m::Candidate;
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::bus::{Frame, Item, MediaKind, SessionHandle as Registration, Stream, Track};
use crate::egress::gso::gso_run;
use crate::limits::{ConnLimiter, ConnPermit};

use super::demux::{is_stun, rfc4571_frame, Demux, Rfc4571Decoder, Transport};
use super::reorder::{ReorderDetector, B_FRAMES_WARNING};
use super::rtp::{PathPacketizer, RtpFrame};
use super::session::{format_id, Session, SessionEvent, SessionId};
use super::whip::PublishSession;
use super::Shared;

/// Commands from the HTTP handlers.
pub enum Command {
    /// A negotiated session: start answering its STUN.
    Add {
        session: Box<Session>,
        stream: Arc<Stream>,
        /// Its entry in the gateway's session registry (dropped with it).
        registration: Registration,
        /// Waits for an operator's kick; aborted with the session.
        kick_waiter: AbortOnDrop,
    },
    /// A negotiated WHIP publisher: start answering its STUN. Its media
    /// goes to the bus through the publication it holds.
    AddPublisher {
        session: Box<PublishSession>,
        registration: Registration,
        kick_waiter: AbortOnDrop,
    },
    /// Trickled remote candidates (WHEP or WHIP PATCH).
    Candidates {
        id: SessionId,
        candidates: Vec<Candidate>,
    },
    /// End a session (WHEP DELETE).
    Remove { id: SessionId, reason: String },
}

/// From ICE-TCP connection tasks.
enum TcpEvent {
    Packet {
        remote: SocketAddr,
        local: SocketAddr,
        data: Vec<u8>,
    },
    Closed {
        remote: SocketAddr,
    },
}

/// Datagrams read per `recvmmsg` call.
const BATCH: usize = 16;
/// Per-datagram receive buffer; 64 KiB also holds a GRO-coalesced batch.
const RECV_BUF: usize = 64 * 1024;
/// Packets queued for one ICE-TCP viewer before its packets are dropped.
const TCP_QUEUE: usize = 512;
/// Pause after a failed ICE-TCP accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// An ICE-TCP connection must send its first bytes within this.
const TCP_FIRST_PACKET: Duration = Duration::from_secs(10);
/// An ICE-TCP connection silent this long is closed (consent checks come
/// every 5 s on average, RFC 7675 §5.1).
const TCP_IDLE: Duration = Duration::from_secs(30);
/// A write to an ICE-TCP viewer that doesn't finish in this is its end.
const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest RFC 4571 frame accepted (the 16-bit length allows 65535).
const TCP_READ_BUF: usize = 16 * 1024;

/// Aborts a task when dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A WHEP viewer or a WHIP publisher: the socket side is the same (ICE,
/// DTLS, timers), the media goes the other way.
enum Peer {
    Viewer(Box<Session>),
    Publisher(Box<PublishSession>),
}

impl Peer {
    fn path(&self) -> &str {
        match self {
            Peer::Viewer(s) => &s.path,
            Peer::Publisher(s) => &s.path,
        }
    }

    fn ufrag(&self) -> &str {
        match self {
            Peer::Viewer(s) => s.ufrag(),
            Peer::Publisher(s) => s.ufrag(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Peer::Viewer(s) => s.is_closed(),
            Peer::Publisher(s) => s.is_closed(),
        }
    }

    fn next_timeout(&self) -> Instant {
        match self {
            Peer::Viewer(s) => s.next_timeout(),
            Peer::Publisher(s) => s.next_timeout(),
        }
    }

    fn take_events(&mut self) -> Vec<SessionEvent> {
        match self {
            Peer::Viewer(s) => s.take_events(),
            Peer::Publisher(s) => s.take_events(),
        }
    }

    fn take_new_bytes(&mut self) -> u64 {
        match self {
            Peer::Viewer(s) => s.take_new_bytes(),
            Peer::Publisher(s) => s.take_new_bytes(),
        }
    }

    fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
        out: &mut Vec<Transmit>,
    ) -> bool {
        match self {
            Peer::Viewer(s) => s.handle_receive(now, proto, source, destination, data, out),
            Peer::Publisher(s) => s.handle_receive(now, proto, source, destination, data, out),
        }
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        match self {
            Peer::Viewer(s) => s.handle_timeout(now, out),
            Peer::Publisher(s) => s.handle_timeout(now, out),
        }
    }

    fn add_remote_candidate(&mut self, now: Instant, c: Candidate, out: &mut Vec<Transmit>) {
        match self {
            Peer::Viewer(s) => s.add_remote_candidate(now, c, out),
            Peer::Publisher(s) => s.add_remote_candidate(now, c, out),
        }
    }

    fn close(&mut self, now: Instant, reason: &str, out: &mut Vec<Transmit>) {
        match self {
            Peer::Viewer(s) => s.close(now, reason, out),
            Peer::Publisher(s) => s.close(now, reason, out),
        }
    }
}

struct Entry {
    session: Peer,
    /// The stream a viewer reads; `None` for a publisher (its publication
    /// owns the stream it feeds).
    stream: Option<Arc<Stream>>,
    registration: Registration,
    _kick_waiter: AbortOnDrop,
    /// Ends the session's bus subscription stream.
    subscription: Option<AbortHandle>,
    /// The timeout last pushed onto the timer heap.
    scheduled: Option<Instant>,
}

/// Per-path state shared by that path's viewers.
struct PathState {
    /// The path name, for logs and warnings.
    name: Arc<str>,
    /// Sessions of this path; the state goes when the last one does.
    viewers: usize,
    /// The path's frames as RTP payloads, made once for all its viewers.
    rtp: PathPacketizer,
    reorder: ReorderDetector,
    /// The last frame examined by `reorder`, so each frame is looked at once.
    last_checked: Option<Arc<Frame>>,
}

/// A session's next bus item and whether it came from the cached GOP;
/// `None` once the stream ended.
type FrameItem = (SessionId, Option<(Item, bool)>);

pub(super) struct Driver {
    udp: UdpSocket,
    udp_state: quinn_udp::UdpSocketState,
    /// Bound address; its IP is unspecified when listening on all interfaces.
    udp_local: SocketAddr,
    tcp: Option<TcpListener>,
    /// ICE-TCP connections at once (`max_connections`); more are closed.
    tcp_limiter: Arc<ConnLimiter>,
    /// After a failed accept, no accept until then.
    tcp_paused_until: Option<tokio::time::Instant>,
    commands: mpsc::UnboundedReceiver<Command>,
    tcp_tx: mpsc::Sender<TcpEvent>,
    tcp_rx: mpsc::Receiver<TcpEvent>,
    tcp_conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    sessions: HashMap<SessionId, Entry>,
    demux: Demux<SessionId>,
    timers: BinaryHeap<Reverse<(Instant, SessionId)>>,
    frames: SelectAll<BoxStream<'static, FrameItem>>,
    paths: HashMap<String, PathState>,
    shared: Arc<Shared>,
    out: Vec<Transmit>,
    /// A run of one session's equal-sized datagrams, for one GSO send.
    gso_buf: Vec<u8>,
    /// Sessions removed since the allocator was last asked to give free
    /// memory back ([`release_free_memory`]).
    removed_since_trim: usize,
    /// A trim is scheduled and has not run yet.
    trim_pending: Arc<std::sync::atomic::AtomicBool>,
}

/// Sessions removed before free memory is given back to the OS: a burst of
/// unconnected WHEP sessions (a flood, a video wall reloading) frees
/// megabytes that glibc would otherwise keep in its arenas.
const TRIM_AFTER_REMOVALS: usize = 32;
/// How long after the first of those removals the trim runs, so one trim
/// covers a burst of removals.
const TRIM_DELAY: Duration = Duration::from_secs(3);

/// Gives the allocator's free memory back to the OS. glibc keeps freed
/// memory of its arenas (one per thread that allocated, below the top of
/// each heap) for reuse; 300 WHEP sessions that never connected left ~9 MB
/// of RSS this way after they were all dropped (measured: `malloc_trim(0)`
/// on the gateway took it from 31 to 22 MB). Other allocators return
/// memory on their own; this is then a no-op.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heaps, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Driver {
    pub(super) fn new(
        udp: UdpSocket,
        tcp: Option<TcpListener>,
        tcp_limiter: Arc<ConnLimiter>,
        commands: mpsc::UnboundedReceiver<Command>,
        shared: Arc<Shared>,
    ) -> std::io::Result<Driver> {
        let udp_state = quinn_udp::UdpSocketState::new((&udp).into())?;
        // Room for a GOP burst to new viewers and for many viewers' packets
        // between two polls; the kernel caps it at net.core.wmem_max.
        let _ = udp_state.set_send_buffer_size((&udp).into(), 4 << 20);
        let _ = udp_state.set_recv_buffer_size((&udp).into(), 2 << 20);
        let udp_local = udp.local_addr()?;
        let (tcp_tx, tcp_rx) = mpsc::channel(1024);
        Ok(Driver {
            udp,
            udp_state,
            udp_local,
            tcp,
            tcp_limiter,
            tcp_paused_until: None,
            commands,
            tcp_tx,
            tcp_rx,
            tcp_conns: HashMap::new(),
            sessions: HashMap::new(),
            demux: Demux::default(),
            timers: BinaryHeap::new(),
            frames: SelectAll::new(),
            paths: HashMap::new(),
            shared,
            out: Vec::new(),
            gso_buf: Vec::new(),
            removed_since_trim: 0,
            trim_pending: Arc::default(),
        })
    }

    /// Runs until the engine (the command sender) is dropped.
    pub(super) async fn run(mut self) {
        let mut bufs = vec![vec![0u8; RECV_BUF]; BATCH];
        loop {
            let next_timer = self.timers.peek().map(|Reverse((t, _))| *t);
            let sleep = tokio::time::sleep_until(
                next_timer
                    .map(tokio::time::Instant::from_std)
                    .unwrap_or_else(|| {
                        tokio::time::Instant::now() + std::time::Duration::from_secs(3600)
                    }),
            );
            tokio::select! {
                r = self.udp.readable() => {
                    if let Err(e) = r {
                        tracing::error!("WebRTC UDP socket failed: {e}");
                        return;
                    }
                    self.read_udp(&mut bufs);
                }
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(ev) = self.tcp_rx.recv() => self.on_tcp(ev),
                Some((id, item)) = self.frames.next(), if !self.frames.is_empty() => {
                    self.on_frame(id, item);
                }
                accepted = accept(&self.tcp), if self.tcp.is_some() && self.tcp_paused_until.is_none() => {
                    self.on_accept(accepted)
                }
                _ = pause_end(self.tcp_paused_until), if self.tcp_paused_until.is_some() => {
                    self.tcp_paused_until = None;
                }
                _ = sleep, if next_timer.is_some() => self.on_timers(),
            }
        }
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.remove(id, "the gateway is shutting down");
        }
    }

    fn read_udp(&mut self, bufs: &mut [Vec<u8>]) {
        // Bounded work per wake-up so timers and frames are not starved.
        for _ in 0..8 {
            let mut meta = [quinn_udp::RecvMeta::default(); BATCH];
            let mut slices: Vec<IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let udp = &self.udp;
            let state = &self.udp_state;
            let n = match udp.try_io(Interest::READABLE, || {
                state.recv(udp.into(), &mut slices, &mut meta)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // ICMP errors (e.g. port unreachable from a closed
                    // viewer) surface here; they concern one peer only.
                    tracing::debug!("WebRTC UDP receive: {e}");
                    continue;
                }
            };
            let now = Instant::now();
            for (m, buf) in meta.iter().zip(bufs.iter()).take(n) {
                let local_ip = m.dst_ip.unwrap_or(self.udp_local.ip());
                let local = SocketAddr::new(local_ip, self.udp_local.port());
                let stride = m.stride.max(1);
                for seg in buf[..m.len].chunks(stride) {
                    self.on_packet(now, Transport::Udp, m.addr, local, seg);
                }
            }
        }
    }

    fn on_packet(
        &mut self,
        now: Instant,
        transport: Transport,
        remote: SocketAddr,
        local: SocketAddr,
        data: &[u8],
    ) {
        let Some(id) = self.demux.lookup(transport, remote, data) else {
            if transport == Transport::Tcp {
                // Not for any session: this connection is of no use.
                self.tcp_conns.remove(&remote);
            }
            return;
        };
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        let proto = match transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        };
        let mut out = std::mem::take(&mut self.out);
        let accepted = entry
            .session
            .handle_receive(now, proto, remote, local, data, &mut out);
        if accepted && is_stun(data) {
            self.demux.learn(transport, remote, id);
        }
        self.out = out;
        self.after(id);
    }

    /// Sends what the session produced, handles its events, re-arms its timer.
    fn after(&mut self, id: SessionId) {
        let out = std::mem::take(&mut self.out);
        self.send_all(&out);
        let mut out = out;
        out.clear();
        self.out = out;

        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        let events = entry.session.take_events();
        let sent = entry.session.take_new_bytes();
        if sent > 0 {
            if let Some(stream) = &entry.stream {
                stream
                    .stats
                    .bytes_out
                    .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
            }
            entry.registration.add_bytes(sent);
        }
        let t = entry.session.next_timeout();
        if entry.scheduled != Some(t) {
            entry.scheduled = Some(t);
            self.timers.push(Reverse((t, id)));
        }
        for ev in events {
            match ev {
                // A publisher has no stream to read: `subscribe` skips it.
                SessionEvent::Connected => self.subscribe(id),
                SessionEvent::Closed(reason) => {
                    self.remove(id, &reason);
                    return;
                }
            }
        }
    }

    /// Sends a session's output: runs of equal-sized UDP datagrams to the
    /// same viewer (a frame's fragments) as one GSO send each.
    fn send_all(&mut self, out: &[Transmit]) {
        let max_segments = self.udp_state.max_gso_segments();
        let mut i = 0;
        while i < out.len() {
            let t = &out[i];
            let j = if t.proto == Protocol::Udp {
                gso_run(
                    i,
                    out.len(),
                    max_segments,
                    |k| out[k].contents.len(),
                    |k| {
                        out[k].proto == Protocol::Udp
                            && out[k].destination == t.destination
                            && out[k].source == t.source
                    },
                )
            } else {
                i + 1
            };
            if j - i == 1 {
                self.send(t);
            } else {
                let mut buf = std::mem::take(&mut self.gso_buf);
                buf.clear();
                for o in &out[i..j] {
                    buf.extend_from_slice(&o.contents);
                }
                self.send_udp(t, &buf, Some(t.contents.len()));
                self.gso_buf = buf;
            }
            i = j;
        }
    }

    fn send(&mut self, t: &Transmit) {
        match t.proto {
            Protocol::Udp => self.send_udp(t, &t.contents, None),
            _ => {
                if let Some(tx) = self.tcp_conns.get(&t.destination) {
                    match rfc4571_frame(&t.contents) {
                        Some(framed) => {
                            if tx.try_send(framed).is_err() {
                                // This viewer's TCP queue is full: its loss only.
                                self.shared.note_drop();
                            }
                        }
                        None => tracing::debug!("packet too large for ICE-TCP framing"),
                    }
                }
            }
        }
    }

    /// Sends `contents` (one datagram, or GSO segments of `segment_size`)
    /// to `t`'s destination, from `t`'s source.
    fn send_udp(&self, t: &Transmit, contents: &[u8], segment_size: Option<usize>) {
        let transmit = quinn_udp::Transmit {
            destination: t.destination,
            ecn: None,
            contents,
            segment_size,
            // On a wildcard socket, answer from the address the viewer
            // talks to (the candidate str0m chose).
            src_ip: self
                .udp_local
                .ip()
                .is_unspecified()
                .then_some(t.source.ip()),
        };
        let udp = &self.udp;
        let state = &self.udp_state;
        match udp.try_io(Interest::WRITABLE, || state.try_send(udp.into(), &transmit)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Socket buffer full: drop; NACK/RTX repairs video.
                self.shared.note_drop();
            }
            Err(e) => tracing::debug!(to = %t.destination, "WebRTC UDP send: {e}"),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Add {
                session,
                stream,
                registration,
                kick_waiter,
            } => {
                let id = session.id;
                self.demux.add_session(session.ufrag(), id);
                self.paths
                    .entry(session.path.clone())
                    .or_insert_with(|| PathState {
                        name: Arc::from(session.path.as_str()),
                        viewers: 0,
                        rtp: PathPacketizer::default(),
                        reorder: ReorderDetector::default(),
                        last_checked: None,
                    })
                    .viewers += 1;
                tracing::info!(
                    path = %session.path,
                    session = %format_id(id),
                    "WebRTC viewer negotiated"
                );
                self.sessions.insert(
                    id,
                    Entry {
                        session: Peer::Viewer(session),
                        stream: Some(stream),
                        registration,
                        _kick_waiter: kick_waiter,
                        subscription: None,
                        scheduled: None,
                    },
                );
                self.after(id);
            }
            Command::AddPublisher {
                session,
                registration,
                kick_waiter,
            } => {
                let id = session.id;
                self.demux.add_session(session.ufrag(), id);
                tracing::info!(
                    path = %session.path,
                    session = %format_id(id),
                    "WHIP publisher negotiated"
                );
                self.sessions.insert(
                    id,
                    Entry {
                        session: Peer::Publisher(session),
                        stream: None,
                        registration,
                        _kick_waiter: kick_waiter,
                        subscription: None,
                        scheduled: None,
                    },
                );
                self.after(id);
            }
            Command::Candidates { id, candidates } => {
                let Some(entry) = self.sessions.get_mut(&id) else {
                    return;
                };
                let mut out = std::mem::take(&mut self.out);
                for c in candidates {
                    entry.session.add_remote_candidate(now, c, &mut out);
                }
                self.out = out;
                self.after(id);
            }
            Command::Remove { id, reason } => {
                if let Some(entry) = self.sessions.get_mut(&id) {
                    let mut out = std::mem::take(&mut self.out);
                    entry.session.close(now, &reason, &mut out);
                    self.out = out;
                    self.after(id);
                }
            }
        }
    }

    /// Subscribes a newly connected session to its stream's bus. The
    /// subscriber starts with the current track set and the cached GOP
    /// (from its keyframe).
    fn subscribe(&mut self, id: SessionId) {
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        if entry.subscription.is_some() {
            return;
        }
        let Some(stream) = &entry.stream else {
            return;
        };
        let sub = stream.subscribe();
        let s = futures::stream::unfold(Some(sub), move |state| async move {
            let mut sub = state?;
            let from_backlog = !sub.backlog().is_empty();
            match sub.recv().await {
                Ok(f) => Some(((id, Some((f, from_backlog))), Some(sub))),
                // Report the end once, then finish.
                Err(_) => Some(((id, None), None)),
            }
        });
        let (s, abort) = futures::stream::abortable(s);
        entry.subscription = Some(abort);
        self.frames.push(s.boxed());
        tracing::info!(path = %entry.session.path(), session = %format_id(id), "WebRTC viewer connected");
    }

    fn on_frame(&mut self, id: SessionId, item: Option<(Item, bool)>) {
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        let Peer::Viewer(session) = &mut entry.session else {
            return;
        };
        let (frame, from_backlog) = match item {
            None => {
                self.remove(id, "the stream was removed");
                return;
            }
            Some((Item::Tracks(set), _)) => {
                if !session.update_tracks(&set) {
                    // A source that restarted with other codecs: this
                    // viewer's negotiation no longer holds.
                    self.remove(id, "the source restarted with different tracks; reconnect");
                }
                return;
            }
            Some((Item::Frame(frame), from_backlog)) => (frame, from_backlog),
        };
        let now = Instant::now();
        // Present from `Command::Add` until the path's last session goes.
        let Some(path) = self.paths.get_mut(session.path.as_str()) else {
            return;
        };
        let shared = &self.shared;
        let session_path = path.name.clone();
        let mut packetize = |track: &Track, f: &Arc<Frame>| -> Option<Arc<RtpFrame>> {
            let codec = &track.codec;
            if codec.kind() == MediaKind::Video
                && !path
                    .last_checked
                    .as_ref()
                    .is_some_and(|l| Arc::ptr_eq(l, f))
            {
                path.last_checked = Some(f.clone());
                if path.reorder.check(track, &f.data) {
                    tracing::warn!(path = %session_path, "{B_FRAMES_WARNING}");
                    shared.set_warning(&session_path, B_FRAMES_WARNING);
                }
            }
            match path.rtp.packets(codec, f) {
                Ok(rtp) => Some(rtp),
                Err(e) => {
                    tracing::debug!(path = %session_path, track = f.track, "frame not sent: {e}");
                    None
                }
            }
        };
        let mut out = std::mem::take(&mut self.out);
        session.write_frame(now, &frame, from_backlog, &mut packetize, &mut out);
        self.out = out;
        self.after(id);
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.sessions.get_mut(&id) else {
                continue;
            };
            if entry.scheduled != Some(t) {
                // Superseded by a later push for this session.
                continue;
            }
            entry.scheduled = None;
            let mut out = std::mem::take(&mut self.out);
            entry.session.handle_timeout(now, &mut out);
            self.out = out;
            self.after(id);
        }
    }

    fn remove(&mut self, id: SessionId, reason: &str) {
        let Some(mut entry) = self.sessions.remove(&id) else {
            return;
        };
        if !entry.session.is_closed() {
            let mut out = Vec::new();
            entry.session.close(Instant::now(), reason, &mut out);
            for t in &out {
                self.send(t);
            }
        }
        if let Some(a) = entry.subscription.take() {
            a.abort();
        }
        self.demux.remove_session(entry.session.ufrag(), id);
        let path = entry.session.path().to_owned();
        self.shared.remove_session(id);
        let viewer = matches!(entry.session, Peer::Viewer(_));
        if let Some(p) = self.paths.get_mut(&path).filter(|_| viewer) {
            p.viewers = p.viewers.saturating_sub(1);
            if p.viewers == 0 {
                // Last viewer of this path: drop the cached conversions.
                self.paths.remove(&path);
            }
        }
        let who = if viewer { "viewer" } else { "WHIP publisher" };
        tracing::info!(path = %path, session = %format_id(id), "WebRTC {who} gone: {reason}");
        self.removed_since_trim += 1;
        self.maybe_trim();
    }

    /// Schedules [`release_free_memory`] once [`TRIM_AFTER_REMOVALS`]
    /// sessions are gone, [`TRIM_DELAY`] later, off the socket task.
    fn maybe_trim(&mut self) {
        use std::sync::atomic::Ordering;
        if self.removed_since_trim < TRIM_AFTER_REMOVALS
            || self.trim_pending.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.removed_since_trim = 0;
        let pending = self.trim_pending.clone();
        tokio::spawn(async move {
            tokio::time::sleep(TRIM_DELAY).await;
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
            pending.store(false, Ordering::Release);
        });
    }

    fn on_accept(&mut self, accepted: std::io::Result<(TcpStream, SocketAddr)>) {
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: pause accepting instead of spinning
                // (this task also carries every viewer's media).
                tracing::debug!("ICE-TCP accept: {e}");
                self.tcp_paused_until = Some(tokio::time::Instant::now() + ACCEPT_BACKOFF);
                return;
            }
        };
        // Over the cap: closed unread (ICE-TCP has no way to say why).
        let Ok(permit) = self.tcp_limiter.try_acquire(remote.ip()) else {
            crate::limits::refuse(stream, b"");
            return;
        };
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::channel(TCP_QUEUE);
        self.tcp_conns.insert(remote, tx);
        tokio::spawn(tcp_connection(
            stream,
            remote,
            local,
            self.tcp_tx.clone(),
            rx,
            permit,
        ));
    }

    fn on_tcp(&mut self, ev: TcpEvent) {
        match ev {
            TcpEvent::Packet {
                remote,
                local,
                data,
            } => {
                if !self.tcp_conns.contains_key(&remote) {
                    return;
                }
                self.on_packet(Instant::now(), Transport::Tcp, remote, local, &data);
            }
            TcpEvent::Closed { remote } => {
                self.tcp_conns.remove(&remote);
                self.demux.forget_addr(Transport::Tcp, remote);
            }
        }
    }
}

async fn pause_end(until: Option<tokio::time::Instant>) {
    if let Some(t) = until {
        tokio::time::sleep_until(t).await;
    }
}

async fn accept(l: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// One ICE-TCP connection (RFC 6544, passive side): RFC 4571 frames in to
/// the driver, framed packets from the driver out. Ends when the peer
/// closes, on an I/O error, or when the driver drops its sender.
async fn tcp_connection(
    stream: TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    events: mpsc::Sender<TcpEvent>,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    _permit: ConnPermit,
) {
    let (mut rd, mut wr) = stream.into_split();
    let reader_events = events.clone();
    let reader = async move {
        let mut dec = Rfc4571Decoder::default();
        let mut buf = vec![0u8; TCP_READ_BUF];
        let mut dec_started = false;
        loop {
            // A browser sends a STUN binding request at once and consent
            // checks every few seconds (RFC 7675): a connection silent for
            // longer is a port scanner or a dead peer.
            let limit = if dec_started {
                TCP_IDLE
            } else {
                TCP_FIRST_PACKET
            };
            let n = match tokio::time::timeout(limit, rd.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(n)) => n,
            };
            dec_started = true;
            dec.push(&buf[..n]);
            while let Some(data) = dec.next_packet() {
                let ev = TcpEvent::Packet {
                    remote,
                    local,
                    data,
                };
                if reader_events.send(ev).await.is_err() {
                    return;
                }
            }
        }
    };
    let writer = async move {
        while let Some(framed) = outgoing.recv().await {
            // A viewer that stops reading must not hold its queue for ever.
            match tokio::time::timeout(TCP_WRITE_TIMEOUT, wr.write_all(&framed)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
    let _ = events.send(TcpEvent::Closed { remote }).await;
}
