//! The RTSP server's protocol core for one client connection: a pure state
//! machine (RFC 2326 §A.1, server side) that turns a parsed request into a
//! response and an [`Effect`] for the I/O shell. No sockets, no clock reads:
//! time and stream lookups are passed in.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtsp_types::headers::{self, Transport, TransportMode, Transports};
use rtsp_types::{Method, Request, Response, StatusCode, Version};

use crate::auth::Action;
use crate::bus::{RtpSource, TrackSet};
use crate::egress::rtsp::sdp;

/// Methods this server answers, for the `Public` header of OPTIONS.
pub const PUBLIC_METHODS: &str = "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, RECORD, PAUSE, \
     TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// What the core knows of a path, as answered by the shell.
#[derive(Clone, Debug)]
pub enum PathStatus {
    /// No such path: 404.
    Unknown,
    /// The path exists but its source is not live; the reason in plain words: 503.
    NotReady(String),
    /// Live, with these tracks.
    Ready(Arc<TrackSet>),
}

/// Stream lookups the core needs; the shell implements it over the registry.
pub trait Paths {
    fn status(&self, path: &str) -> PathStatus;
}

/// How RTP for one track reaches the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackTransport {
    /// Interleaved on the RTSP connection (RFC 2326 §10.12).
    Tcp { rtp_channel: u8, rtcp_channel: u8 },
    /// UDP unicast to the client's ports.
    Udp { rtp: SocketAddr, rtcp: SocketAddr },
}

/// Session state (RFC 2326 §A.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Ready,
    Playing,
    /// A publisher's session after RECORD (RFC 2326 §A.1 "Recording").
    Recording,
}

/// One RTSP session: set-up tracks of one path.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub path: String,
    /// Track-set generation the client was described with.
    pub generation: u64,
    pub state: State,
    /// Per bus track index: `Some` once set up.
    pub tracks: Vec<Option<TrackTransport>>,
    last_activity: Instant,
}

/// A publisher's ANNOUNCE: its path and tracks, in SDP order.
#[derive(Clone, Debug, PartialEq)]
pub struct Announcement {
    pub path: String,
    pub tracks: Vec<RtpSource>,
}

/// What the shell must do after sending the response.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// A publisher announced `tracks` for `path` (ANNOUNCE): the shell opens
    /// the publication, or answers the refusal instead of the core's 200
    /// and calls [`Conn::announce_failed`].
    Announce(Box<Announcement>),
    /// The publisher's media flows from now on (RECORD): RTP of each
    /// set-up track goes into the publication.
    Record,
    None,
    /// Start (or resume) sending media of the session. The shell adds
    /// `RTP-Info` to the response before sending it.
    Play,
    /// Stop sending media; keep the session.
    Pause,
    /// The session ended (TEARDOWN).
    Teardown,
    /// Send the response, then close the connection (malformed request).
    Close,
}

/// Per-request inputs from the shell.
pub struct Ctx<'a> {
    pub now: Instant,
    pub paths: &'a dyn Paths,
    /// The client's address, for UDP destinations.
    pub peer: IpAddr,
    /// The server's address on this connection, for the SDP origin.
    pub local: IpAddr,
    /// Server RTP port for UDP readers; RTCP is the next port.
    pub server_rtp_port: u16,
    /// A fresh unguessable session id.
    pub new_session_id: &'a mut dyn FnMut() -> String,
}

/// The connection's protocol state.
#[derive(Debug)]
pub struct Conn {
    session: Option<Session>,
    /// What this connection announced (ANNOUNCE), per track its SDP
    /// `a=control`.
    announced: Option<Announced>,
    timeout: Duration,
    /// RTP only inside the connection (RTSPS): UDP transports are refused.
    interleaved_only: bool,
}

/// The result of one request.
pub struct Outcome {
    pub response: Response<Vec<u8>>,
    pub effect: Effect,
    /// `WWW-Authenticate` values of a 401, preferred first. The shell
    /// writes one header line each: rtsp-types would join repeated headers
    /// with commas, which ffmpeg and GStreamer read as one challenge.
    pub challenges: Vec<String>,
}

/// What a request must be allowed to do before [`Conn::handle`] answers
/// it: the authenticator's question (`action` on `path`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub action: Action,
    pub path: String,
}

impl Conn {
    /// `timeout`: a session with no request (or RTCP) for this long ends.
    pub fn new(timeout: Duration) -> Self {
        Conn {
            session: None,
            announced: None,
            timeout,
            interleaved_only: false,
        }
    }

    /// Refuses UDP transports (461): for RTSPS, whose RTP would otherwise
    /// leave the TLS connection in clear text.
    pub fn interleaved_only(mut self) -> Self {
        self.interleaved_only = true;
        self
    }

    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Something arrived for the session (e.g. an RTCP receiver report).
    /// Never moves the activity back: a request may be newer than the
    /// report being recorded.
    pub fn touch(&mut self, now: Instant) {
        if let Some(s) = &mut self.session {
            s.last_activity = s.last_activity.max(now);
        }
    }

    /// When the session times out unless something arrives for it;
    /// `None` without a session.
    pub fn expires_at(&self) -> Option<Instant> {
        self.session
            .as_ref()
            .map(|s| s.last_activity + self.timeout)
    }

    /// Whether the session timed out at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| now.saturating_duration_since(s.last_activity) > self.timeout)
    }

    /// What `req` needs from the authenticator before [`Conn::handle`]
    /// may answer it: `read` for DESCRIBE, SETUP and PLAY, `publish` for
    /// ANNOUNCE and RECORD, on the path of the request URI (or, for an
    /// aggregate URI like `*`, of the connection's session). `None`: the
    /// request needs nothing (OPTIONS; PAUSE, TEARDOWN and GET_PARAMETER
    /// act on a session whose SETUP was checked), or names no path, which
    /// `handle` refuses itself (400, 455) without revealing anything.
    pub fn access(&self, req: &Request<Vec<u8>>) -> Option<Access> {
        let action = match req.method() {
            // A publisher's SETUP (after its ANNOUNCE) sets up what it sends.
            Method::Setup if self.announced.is_some() => Action::Publish,
            Method::Describe | Method::Setup | Method::Play => Action::Read,
            Method::Announce | Method::Record => Action::Publish,
            _ => return None,
        };
        if action == Action::Publish {
            if let Some((path, _)) = req.request_uri().and_then(record_target) {
                return Some(Access { action, path });
            }
        }
        let path = match req.request_uri().and_then(parse_target) {
            Some(t) => t.path,
            None if matches!(req.method(), Method::Play | Method::Record) => {
                self.session.as_ref()?.path.clone()
            }
            None => return None,
        };
        Some(Access { action, path })
    }

    /// Answers a request the authenticator refused: `401 Unauthorized`
    /// with `challenges` (RFC 2326 §11.2.4; one `WWW-Authenticate` each),
    /// the session untouched and the connection kept, so the client can
    /// retry with credentials.
    pub fn unauthorized(&self, req: &Request<Vec<u8>>, challenges: Vec<String>) -> Outcome {
        finish(req, || Outcome {
            challenges,
            ..reply(StatusCode::Unauthorized, "")
        })
    }

    /// Answers one request. Never panics on client input.
    pub fn handle(&mut self, req: &Request<Vec<u8>>, ctx: &mut Ctx<'_>) -> Outcome {
        finish(req, || self.dispatch(req, ctx))
    }

    fn dispatch(&mut self, req: &Request<Vec<u8>>, ctx: &mut Ctx<'_>) -> Outcome {
        // Any request naming the session keeps it alive.
        let session_hdr = match req.typed_header::<headers::Session>() {
            Ok(s) => s.map(|s| s.0),
            Err(_) => return reply(StatusCode::BadRequest, "malformed Session header"),
        };
        if let Some(id) = &session_hdr {
            match &mut self.session {
                Some(s) if &s.id == id => s.last_activity = ctx.now,
                _ => return reply(StatusCode::SessionNotFound, ""),
            }
        }
        match req.method() {
            Method::Options => {
                let mut out = reply(StatusCode::Ok, "");
                out.response.insert_header(headers::PUBLIC, PUBLIC_METHODS);
                out
            }
            Method::Describe => self.describe(req, ctx),
            Method::Announce => self.announce(req),
            Method::Setup if self.announced.is_some() => {
                self.setup_record(req, ctx, session_hdr.is_some())
            }
            Method::Setup => self.setup(req, ctx, session_hdr.is_some()),
            Method::Record => match (&mut self.session, session_hdr) {
                (Some(s), Some(_)) if self.announced.is_some() => {
                    if s.tracks.iter().all(Option::is_none) {
                        return reply(StatusCode::MethodNotValidInThisState, "SETUP first");
                    }
                    s.state = State::Recording;
                    let mut out = reply(StatusCode::Ok, "").with_effect(Effect::Record);
                    add_session(&mut out, s, self.timeout);
                    out
                }
                _ => reply(
                    StatusCode::MethodNotValidInThisState,
                    "ANNOUNCE and SETUP first",
                ),
            },
            Method::Play if self.announced.is_some() => reply(
                StatusCode::MethodNotValidInThisState,
                "this connection publishes: RECORD, not PLAY",
            ),
            Method::Play => match (&mut self.session, session_hdr) {
                (Some(s), Some(_)) => {
                    if let Err(out) = check_path(req, &s.path) {
                        return out;
                    }
                    let live = match ctx.paths.status(&s.path) {
                        PathStatus::Ready(set) => set.generation == s.generation,
                        _ => false,
                    };
                    if !live {
                        return reply(
                            StatusCode::ServiceUnavailable,
                            "source not live or restarted with new tracks; DESCRIBE again",
                        );
                    }
                    s.state = State::Playing;
                    let mut out = reply(StatusCode::Ok, "").with_effect(Effect::Play);
                    out.response.insert_header(headers::RANGE, "npt=0.000-");
                    add_session(&mut out, s, self.timeout);
                    out
                }
                _ => reply(StatusCode::MethodNotValidInThisState, "SETUP first"),
            },
            Method::Pause => match (&mut self.session, session_hdr) {
                (Some(s), Some(_)) => {
                    s.state = State::Ready;
                    let mut out = reply(StatusCode::Ok, "").with_effect(Effect::Pause);
                    add_session(&mut out, s, self.timeout);
                    out
                }
                _ => reply(StatusCode::MethodNotValidInThisState, "SETUP first"),
            },
            Method::Teardown => match session_hdr {
                Some(_) => {
                    self.session = None;
                    self.announced = None;
                    reply(StatusCode::Ok, "").with_effect(Effect::Teardown)
                }
                None => reply(StatusCode::SessionNotFound, "no Session header"),
            },
            Method::GetParameter | Method::SetParameter => {
                let mut out = reply(StatusCode::Ok, "");
                if let Some(s) = &self.session {
                    add_session(&mut out, s, self.timeout);
                }
                out
            }
            _ => {
                let mut out = reply(StatusCode::NotImplemented, "");
                out.response.insert_header(headers::ALLOW, PUBLIC_METHODS);
                out
            }
        }
    }

    /// The shell could not open the announced publication: the
    /// connection is back to where it was before ANNOUNCE.
    pub fn announce_failed(&mut self) {
        self.announced = None;
    }

    /// Whether this connection publishes (ANNOUNCE was accepted).
    pub fn publishing(&self) -> bool {
        self.announced.is_some()
    }

    fn announce(&mut self, req: &Request<Vec<u8>>) -> Outcome {
        let Some(uri) = req.request_uri() else {
            return reply(StatusCode::BadRequest, "bad request URI");
        };
        let Some(target) = parse_target(uri) else {
            return reply(StatusCode::BadRequest, "bad request URI");
        };
        if self.session.is_some() || self.announced.is_some() {
            return reply(
                StatusCode::MethodNotValidInThisState,
                "this connection already has a session",
            );
        }
        let is_sdp = req
            .header(&headers::CONTENT_TYPE)
            .is_some_and(|v| v.as_str().trim().eq_ignore_ascii_case("application/sdp"));
        if !is_sdp {
            return reply(
                StatusCode::UnsupportedMediaType,
                "ANNOUNCE takes application/sdp",
            );
        }
        let (tracks, controls) = match sdp::announced_tracks(req.body()) {
            Ok(t) => t,
            Err(why) => return reply(StatusCode::UnsupportedMediaType, &why),
        };
        self.announced = Some(Announced {
            path: target.path.clone(),
            controls,
        });
        reply(StatusCode::Ok, "").with_effect(Effect::Announce(Box::new(Announcement {
            path: target.path,
            tracks,
        })))
    }

    /// SETUP of a publisher's track (`mode=record`, RFC 2326 §10.11):
    /// the track is the announced one whose `a=control` the URI ends with.
    fn setup_record(
        &mut self,
        req: &Request<Vec<u8>>,
        ctx: &mut Ctx<'_>,
        has_session_hdr: bool,
    ) -> Outcome {
        let Some(announced) = &self.announced else {
            return reply(StatusCode::MethodNotValidInThisState, "ANNOUNCE first");
        };
        let Some((path, rest)) = req.request_uri().and_then(record_target) else {
            return reply(StatusCode::BadRequest, "bad request URI");
        };
        if path != announced.path {
            return reply(StatusCode::NotFound, "not the announced path");
        }
        let index =
            if announced.controls.len() == 1 && rest.is_empty() {
                0
            } else {
                let Some(i) = announced.controls.iter().position(|c| {
                    !rest.is_empty() && (c == &rest || c.ends_with(&format!("/{rest}")))
                }) else {
                    return reply(
                        StatusCode::NotFound,
                        "no announced track with this control URL",
                    );
                };
                i
            };
        if self.session.is_some() && !has_session_hdr {
            return reply(
                StatusCode::AggregateOperationNotAllowed,
                "this connection already has a session; send its Session header",
            );
        }
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.state != State::Ready)
        {
            return reply(StatusCode::MethodNotValidInThisState, "already recording");
        }
        let transports = match req.typed_header::<Transports>() {
            Ok(Some(t)) => t,
            Ok(None) => return reply(StatusCode::BadRequest, "missing Transport header"),
            Err(_) => return reply(StatusCode::BadRequest, "malformed Transport header"),
        };
        let existing = self
            .session
            .as_ref()
            .and_then(|s| s.tracks.iter().flatten().next().copied());
        let udp_port = (!self.interleaved_only).then_some(ctx.server_rtp_port);
        let Some((chosen, header)) =
            choose_transport(&transports, index, existing, ctx.peer, udp_port, true)
        else {
            return reply(
                StatusCode::UnsupportedTransport,
                "publish with RTP/AVP/TCP;interleaved;mode=record or \
                 RTP/AVP;unicast;client_port;mode=record",
            );
        };
        let tracks = announced.controls.len();
        let session = self.session.get_or_insert_with(|| Session {
            id: (ctx.new_session_id)(),
            path,
            generation: 0,
            state: State::Ready,
            tracks: vec![None; tracks],
            last_activity: ctx.now,
        });
        if let Some(slot) = session.tracks.get_mut(index) {
            *slot = Some(chosen);
        }
        session.last_activity = ctx.now;
        let mut out = reply(StatusCode::Ok, "");
        out.response.insert_header(headers::TRANSPORT, header);
        add_session(&mut out, session, self.timeout);
        out
    }

    fn describe(&mut self, req: &Request<Vec<u8>>, ctx: &Ctx<'_>) -> Outcome {
        let Some(target) = req.request_uri().and_then(parse_target) else {
            return reply(StatusCode::BadRequest, "bad request URI");
        };
        let set = match ctx.paths.status(&target.path) {
            PathStatus::Unknown => return reply(StatusCode::NotFound, "no such path"),
            PathStatus::NotReady(why) => return reply(StatusCode::ServiceUnavailable, &why),
            PathStatus::Ready(set) => set,
        };
        let body = sdp::describe(&target.path, ctx.local, &set.tracks).into_bytes();
        let mut base = req.request_uri().map(base_uri).unwrap_or_default();
        if !base.ends_with('/') {
            base.push('/');
        }
        let response = Response::builder(Version::V1_0, StatusCode::Ok)
            .header(headers::CONTENT_TYPE, "application/sdp")
            .header(headers::CONTENT_BASE, base)
            .build(body);
        Outcome {
            response,
            effect: Effect::None,
            challenges: Vec::new(),
        }
    }

    fn setup(
        &mut self,
        req: &Request<Vec<u8>>,
        ctx: &mut Ctx<'_>,
        has_session_hdr: bool,
    ) -> Outcome {
        let Some(target) = req.request_uri().and_then(parse_target) else {
            return reply(StatusCode::BadRequest, "bad request URI");
        };
        let set = match ctx.paths.status(&target.path) {
            PathStatus::Unknown => return reply(StatusCode::NotFound, "no such path"),
            PathStatus::NotReady(why) => return reply(StatusCode::ServiceUnavailable, &why),
            PathStatus::Ready(set) => set,
        };
        let index = match target.track {
            Some(i) if i < set.tracks.len() => i,
            Some(_) => return reply(StatusCode::NotFound, "no such track"),
            None if set.tracks.len() == 1 => 0,
            None => {
                return reply(
                    StatusCode::AggregateOperationNotAllowed,
                    "SETUP needs a track control URL",
                )
            }
        };
        if let Some(s) = &self.session {
            if !has_session_hdr {
                // One session per connection keeps the shell simple; clients
                // aggregate tracks with the Session header.
                return reply(
                    StatusCode::AggregateOperationNotAllowed,
                    "this connection already has a session; send its Session header",
                );
            }
            if s.path != target.path {
                return reply(
                    StatusCode::AggregateOperationNotAllowed,
                    "a session carries tracks of one path",
                );
            }
            if s.state == State::Playing {
                return reply(
                    StatusCode::MethodNotValidInThisState,
                    "cannot add tracks while playing",
                );
            }
            if s.generation != set.generation {
                return reply(
                    StatusCode::ServiceUnavailable,
                    "the source restarted with different tracks; DESCRIBE again",
                );
            }
        }
        if req
            .header(&headers::TRANSPORT)
            .is_some_and(|v| !transport_is_parseable(v.as_str()))
        {
            return reply(StatusCode::BadRequest, "malformed Transport header");
        }
        let transports = match req.typed_header::<Transports>() {
            Ok(Some(t)) => t,
            Ok(None) => return reply(StatusCode::BadRequest, "missing Transport header"),
            Err(_) => return reply(StatusCode::BadRequest, "malformed Transport header"),
        };
        let records = |t: &Transport| matches!(t, Transport::Rtp(rtp) if rtp.params.mode.iter().any(|m| *m != TransportMode::Play));
        if !transports.is_empty() && transports.iter().all(records) {
            // A client that means to publish (RFC 2326 §12.39 mode=record)
            // with SETUP on a path we serve.
            return reply(
                StatusCode::UnsupportedTransport,
                "mode=record: ANNOUNCE the stream (application/sdp) before SETUP",
            );
        }
        let existing = self
            .session
            .as_ref()
            .and_then(|s| s.tracks.iter().flatten().next().copied());
        let udp_port = (!self.interleaved_only).then_some(ctx.server_rtp_port);
        let Some((chosen, header)) =
            choose_transport(&transports, index, existing, ctx.peer, udp_port, false)
        else {
            return reply(
                StatusCode::UnsupportedTransport,
                if self.interleaved_only {
                    "RTSPS carries RTP interleaved only: RTP/AVP/TCP;interleaved"
                } else {
                    "supported: RTP/AVP/TCP;interleaved and RTP/AVP;unicast;client_port"
                },
            );
        };
        if let TrackTransport::Tcp { rtp_channel, .. } = chosen {
            let clash = self.session.as_ref().is_some_and(|s| {
                s.tracks.iter().enumerate().any(|(i, t)| {
                    i != index
                        && matches!(t, Some(TrackTransport::Tcp { rtp_channel: c, rtcp_channel: r })
                            if *c == rtp_channel || *r == rtp_channel)
                })
            });
            if clash {
                return reply(
                    StatusCode::UnsupportedTransport,
                    "interleaved channel already in use",
                );
            }
        }
        let session = self.session.get_or_insert_with(|| Session {
            id: (ctx.new_session_id)(),
            path: target.path.clone(),
            generation: set.generation,
            state: State::Ready,
            tracks: vec![None; set.tracks.len()],
            last_activity: ctx.now,
        });
        session.tracks[index] = Some(chosen);
        session.last_activity = ctx.now;
        let mut out = reply(StatusCode::Ok, "");
        out.response.insert_header(headers::TRANSPORT, header);
        add_session(&mut out, session, self.timeout);
        out
    }
}

/// Checks what every request needs (CSeq, RTSP/1.0), runs `answer` and
/// adds the headers every response carries.
fn finish(req: &Request<Vec<u8>>, answer: impl FnOnce() -> Outcome) -> Outcome {
    let Some(cseq) = req.header(&headers::CSEQ).map(|v| v.as_str().trim()) else {
        return reply(StatusCode::BadRequest, "missing CSeq").with_effect(Effect::Close);
    };
    // RFC 2326 §12.17: 1*DIGIT. A client that numbers requests otherwise
    // cannot match our answers; nothing of it is echoed back.
    if cseq.is_empty() || cseq.len() > 10 || !cseq.bytes().all(|b| b.is_ascii_digit()) {
        return reply(
            StatusCode::BadRequest,
            "CSeq must be a non-negative integer",
        );
    }
    let cseq = cseq.to_owned();
    let unsupported = unsupported_options(req);
    let mut out = if req.version() != Version::V1_0 {
        reply(StatusCode::RTSPVersionNotSupported, "RTSP/1.0 only")
    } else if !unsupported.is_empty() {
        // RFC 2326 §12.32: every option named in Require or Proxy-Require
        // that we don't implement (we implement none) is listed back.
        let mut out = reply(StatusCode::OptionNotSupported, "");
        out.response
            .insert_header(headers::UNSUPPORTED, unsupported.join(", "));
        out
    } else {
        answer()
    };
    out.response.insert_header(headers::CSEQ, cseq);
    out.response.insert_header(
        headers::SERVER,
        concat!("rtspgate/", env!("CARGO_PKG_VERSION")),
    );
    out
}

impl Outcome {
    fn with_effect(mut self, effect: Effect) -> Self {
        self.effect = effect;
        self
    }
}

/// The option tags of a request's `Require` and `Proxy-Require` headers
/// (RFC 2326 §12.32, §12.27), none of which this server supports.
fn unsupported_options(req: &Request<Vec<u8>>) -> Vec<String> {
    [headers::REQUIRE, headers::PROXY_REQUIRE]
        .iter()
        .filter_map(|h| req.header(h))
        .flat_map(|v| v.as_str().split(','))
        .map(|tag| tag.trim())
        .filter(|tag| !tag.is_empty())
        .take(16)
        .map(|tag| tag.chars().take(64).collect())
        .collect()
}

/// Whether rtsp-types 0.1.3 can parse `value` without panicking: its
/// quoted-string reader slices a lone `"` (e.g. `dest_addr="`, `mode="`) and
/// asserts on a trailing backslash. No Transport we support needs either.
fn transport_is_parseable(value: &str) -> bool {
    !value.contains('\\')
        && value
            .split([',', ';', '/', '='])
            .all(|piece| piece.trim() != "\"")
}

fn reply(status: StatusCode, reason: &str) -> Outcome {
    let mut b = Response::builder(Version::V1_0, status);
    let body = if reason.is_empty() || status == StatusCode::Ok {
        Vec::new()
    } else {
        b = b.header(headers::CONTENT_TYPE, "text/plain");
        format!("{reason}\r\n").into_bytes()
    };
    Outcome {
        response: b.build(body),
        effect: Effect::None,
        challenges: Vec::new(),
    }
}

fn add_session(out: &mut Outcome, s: &Session, timeout: Duration) {
    out.response.insert_header(
        headers::SESSION,
        format!("{};timeout={}", s.id, timeout.as_secs()),
    );
}

/// A request URI resolved to a path and, for SETUP, a track.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub path: String,
    pub track: Option<usize>,
}

/// Parses `rtsp://host[:port]/<path>[/trackID=<n>][/]`. Path names are
/// `[A-Za-z0-9_-]+` (see config), so the first segment is the path.
pub fn parse_target(uri: &url::Url) -> Option<Target> {
    let mut segs = uri.path().split('/').filter(|s| !s.is_empty());
    let path = segs.next()?.to_owned();
    if !crate::config::rendition::valid_stream_name(&path) {
        return None;
    }
    let track = match segs.next() {
        None => None,
        Some(seg) => Some(seg.strip_prefix("trackID=")?.parse::<usize>().ok()?),
    };
    if segs.next().is_some() {
        return None;
    }
    Some(Target { path, track })
}

/// `uri` without its query and fragment: the base that track control URLs
/// (`trackID=N`) are appended to. Clients append by string concatenation
/// (ffmpeg), so a query (e.g. `?user=..&pass=..` credentials) left in the
/// base would swallow the track part, and would echo the secret back.
pub fn base_uri(uri: &url::Url) -> String {
    let mut u = uri.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.into()
}

fn check_path(req: &Request<Vec<u8>>, path: &str) -> Result<(), Outcome> {
    // Aggregate control: PLAY names the path (some clients use `*` or the
    // Content-Base with a trailing slash).
    match req.request_uri().and_then(parse_target) {
        Some(t) if t.path == path => Ok(()),
        Some(_) => Err(reply(StatusCode::NotFound, "session is for another path")),
        None => Ok(()),
    }
}

/// `rtsp://host[:port]/<path>[/<control>...]` of a publisher's request:
/// the path and what follows it (the announced `a=control`, e.g.
/// `streamid=0` of ffmpeg, `stream=0` of GStreamer), query left out.
pub fn record_target(uri: &url::Url) -> Option<(String, String)> {
    let trimmed = uri.path().trim_start_matches('/');
    let (path, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    if !crate::config::valid_path_name(path) {
        return None;
    }
    Some((path.to_owned(), rest.trim_end_matches('/').to_owned()))
}

/// A publisher's announcement, kept for its SETUPs.
#[derive(Debug)]
struct Announced {
    path: String,
    /// Per track, its `a=control` as announced.
    controls: Vec<String>,
}

/// Picks the first transport the client offers that we support. `existing`
/// is a track already set up in this session: all tracks use one lower
/// transport. `server_rtp_port`: where UDP readers' RTP comes from, `None`
/// when UDP is not offered. Returns the transport and the `Transport`
/// response header.
fn choose_transport(
    offered: &Transports,
    index: usize,
    existing: Option<TrackTransport>,
    peer: IpAddr,
    server_rtp_port: Option<u16>,
    record: bool,
) -> Option<(TrackTransport, String)> {
    // No mode is PLAY (RFC 2326 §12.39); a publisher must say RECORD.
    let wanted = |modes: &[TransportMode]| {
        if record {
            modes.contains(&TransportMode::Record)
        } else {
            modes.iter().all(|m| *m == TransportMode::Play)
        }
    };
    let mode = if record { ";mode=record" } else { "" };
    for t in offered.iter() {
        let Transport::Rtp(rtp) = t else { continue };
        if rtp.profile != headers::transport::RtpProfile::Avp
            || rtp.params.multicast
            || !wanted(&rtp.params.mode)
        {
            continue;
        }
        let tcp = matches!(
            rtp.lower_transport,
            Some(headers::transport::RtpLowerTransport::Tcp)
        );
        match (tcp, existing) {
            (true, Some(TrackTransport::Udp { .. }))
            | (false, Some(TrackTransport::Tcp { .. })) => continue,
            _ => {}
        }
        if tcp {
            let (rtp_channel, rtcp_channel) = match rtp.params.interleaved {
                Some((a, b)) => (a, b.unwrap_or(a.wrapping_add(1))),
                None => {
                    let base = u8::try_from(index * 2).ok()?;
                    (base, base.wrapping_add(1))
                }
            };
            let header =
                format!("RTP/AVP/TCP;unicast;interleaved={rtp_channel}-{rtcp_channel}{mode}");
            return Some((
                TrackTransport::Tcp {
                    rtp_channel,
                    rtcp_channel,
                },
                header,
            ));
        }
        let (Some((rtp_port, rtcp_port)), Some(server_rtp_port)) =
            (rtp.params.client_port, server_rtp_port)
        else {
            continue;
        };
        let rtcp_port = rtcp_port.unwrap_or(rtp_port.wrapping_add(1));
        if rtp_port == 0 {
            continue;
        }
        let header = format!(
            "RTP/AVP;unicast;client_port={rtp_port}-{rtcp_port};server_port={}-{}{mode}",
            server_rtp_port,
            server_rtp_port.saturating_add(1)
        );
        return Some((
            TrackTransport::Udp {
                rtp: SocketAddr::new(peer, rtp_port),
                rtcp: SocketAddr::new(peer, rtcp_port),
            },
            header,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Codec, Track};
    use std::collections::HashMap;

    struct FakePaths(HashMap<String, PathStatus>);
    impl Paths for FakePaths {
        fn status(&self, path: &str) -> PathStatus {
            self.0.get(path).cloned().unwrap_or(PathStatus::Unknown)
        }
    }

    fn paths() -> FakePaths {
        let t = crate::codec::tests::h264_codec();
        let video = Arc::new(Track {
            dimensions: Some((640, 360)),
            frame_rate: Some(25.0),
            ..Track::new(t, 90_000)
        });
        let audio = Arc::new(Track::new(Codec::Pcma { channels: 1 }, 8000));
        let mut m = HashMap::new();
        m.insert(
            "cam".to_owned(),
            PathStatus::Ready(Arc::new(TrackSet {
                generation: 1,
                tracks: vec![video, audio],
            })),
        );
        m.insert(
            "down".to_owned(),
            PathStatus::NotReady("source not live: connection refused".into()),
        );
        FakePaths(m)
    }

    fn parse(text: &str) -> Request<Vec<u8>> {
        let text = text.replace('\n', "\r\n") + "\r\n";
        match rtsp_types::Message::<Vec<u8>>::parse(text.as_bytes()) {
            Ok((rtsp_types::Message::Request(r), _)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    struct Harness {
        conn: Conn,
        paths: FakePaths,
        now: Instant,
    }

    impl Harness {
        fn new() -> Self {
            Harness {
                conn: Conn::new(Duration::from_secs(60)),
                paths: paths(),
                now: Instant::now(),
            }
        }
        fn send(&mut self, text: &str) -> (u16, Effect, Response<Vec<u8>>) {
            let req = parse(text);
            let mut id = || "abc123".to_owned();
            let mut ctx = Ctx {
                now: self.now,
                paths: &self.paths,
                peer: "127.0.0.1".parse().unwrap(),
                local: "127.0.0.1".parse().unwrap(),
                server_rtp_port: 8000,
                new_session_id: &mut id,
            };
            let out = self.conn.handle(&req, &mut ctx);
            (u16::from(out.response.status()), out.effect, out.response)
        }
    }

    fn header(resp: &Response<Vec<u8>>, name: &headers::HeaderName) -> String {
        resp.header(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    }

    /// Transport values rtsp-types 0.1.3 panics on get 400, and the
    /// connection's session state is untouched.
    #[test]
    fn transport_that_would_panic_the_parser_is_400() {
        for t in [
            "RTP/AVP;unicast;dest_addr=\"",
            "RTP/AVP;unicast;dest_addr=\"a\"/\"",
            "RTP/AVP;unicast;mode=\"",
            "RTP/AVP;unicast;dest_addr=\"a\\\"",
        ] {
            let mut h = Harness::new();
            let (code, _, _) = h.send(&format!(
                "SETUP rtsp://h/cam/trackID=0 RTSP/1.0\nCSeq: 3\nTransport: {t}\n"
            ));
            assert_eq!(code, 400, "{t}");
            assert!(h.conn.session().is_none());
        }
        assert!(transport_is_parseable(
            "RTP/AVP;unicast;dest_addr=\"192.0.2.1:5000\""
        ));
    }

    #[test]
    fn describe_setup_play_teardown_over_tcp() {
        let mut h = Harness::new();
        let (code, _, r) = h.send("OPTIONS rtsp://h/cam RTSP/1.0\nCSeq: 1\n");
        assert_eq!(code, 200);
        assert!(header(&r, &headers::PUBLIC).contains("DESCRIBE"));
        assert_eq!(header(&r, &headers::CSEQ), "1");

        let (code, _, r) = h.send("DESCRIBE rtsp://h/cam RTSP/1.0\nCSeq: 2\n");
        assert_eq!(code, 200);
        assert_eq!(header(&r, &headers::CONTENT_BASE), "rtsp://h/cam/");
        let sdp = String::from_utf8(r.body().clone()).unwrap();
        assert!(sdp.contains("a=control:trackID=1"), "{sdp}");

        let (code, _, r) = h.send(
            "SETUP rtsp://h/cam/trackID=0 RTSP/1.0\nCSeq: 3\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\n",
        );
        assert_eq!(code, 200);
        assert_eq!(header(&r, &headers::SESSION), "abc123;timeout=60");
        assert_eq!(
            header(&r, &headers::TRANSPORT),
            "RTP/AVP/TCP;unicast;interleaved=0-1"
        );
        let (code, _, _) = h.send(
            "SETUP rtsp://h/cam/trackID=1 RTSP/1.0\nCSeq: 4\nSession: abc123\nTransport: RTP/AVP/TCP;unicast;interleaved=2-3\n",
        );
        assert_eq!(code, 200);
        let (code, effect, _) = h.send("PLAY rtsp://h/cam/ RTSP/1.0\nCSeq: 5\nSession: abc123\n");
        assert_eq!((code, effect), (200, Effect::Play));
        let s = h.conn.session().unwrap();
        assert_eq!(s.state, State::Playing);
        assert_eq!(
            s.tracks[1],
            Some(TrackTransport::Tcp {
                rtp_channel: 2,
                rtcp_channel: 3
            })
        );
        let (code, _, _) =
            h.send("GET_PARAMETER rtsp://h/cam/ RTSP/1.0\nCSeq: 6\nSession: abc123\n");
        assert_eq!(code, 200);
        let (code, effect, _) =
            h.send("TEARDOWN rtsp://h/cam/ RTSP/1.0\nCSeq: 7\nSession: abc123\n");
        assert_eq!((code, effect), (200, Effect::Teardown));
        assert!(h.conn.session().is_none());
    }

    #[test]
    fn udp_setup_gives_server_ports() {
        let mut h = Harness::new();
        let (code, _, r) = h.send(
            "SETUP rtsp://h/cam/trackID=0 RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP;unicast;client_port=5000-5001\n",
        );
        assert_eq!(code, 200);
        assert_eq!(
            header(&r, &headers::TRANSPORT),
            "RTP/AVP;unicast;client_port=5000-5001;server_port=8000-8001"
        );
        assert_eq!(
            h.conn.session().unwrap().tracks[0],
            Some(TrackTransport::Udp {
                rtp: "127.0.0.1:5000".parse().unwrap(),
                rtcp: "127.0.0.1:5001".parse().unwrap()
            })
        );
    }

    #[test]
    fn cseq_must_be_a_non_negative_integer() {
        for bad in ["abc", "-1", "1.5", "", "99999999999", "1 2"] {
            let mut h = Harness::new();
            let (code, effect, r) = h.send(&format!("OPTIONS * RTSP/1.0\nCSeq: {bad}\n"));
            assert_eq!(code, 400, "{bad:?}");
            assert_eq!(effect, Effect::None, "{bad:?}: the connection stays");
            assert!(r.header(&headers::CSEQ).is_none(), "{bad:?}");
        }
        let mut h = Harness::new();
        assert_eq!(h.send("OPTIONS * RTSP/1.0\nCSeq: 0\n").0, 200);
        assert_eq!(h.send("OPTIONS * RTSP/1.0\nCSeq: 4294967295\n").0, 200);
    }

    #[test]
    fn required_options_are_refused_by_name() {
        let mut h = Harness::new();
        let (code, _, r) =
            h.send("DESCRIBE rtsp://h/cam RTSP/1.0\nCSeq: 1\nRequire: onvif-replay\n");
        assert_eq!(code, 551);
        assert_eq!(header(&r, &headers::UNSUPPORTED), "onvif-replay");
        assert_eq!(header(&r, &headers::CSEQ), "1");
        let (code, _, r) =
            h.send("OPTIONS * RTSP/1.0\nCSeq: 2\nProxy-Require: a, b\nRequire: funky-feature\n");
        assert_eq!(code, 551);
        assert_eq!(header(&r, &headers::UNSUPPORTED), "funky-feature, a, b");
        // Nothing was set up by the refused request.
        assert!(h.conn.session().is_none());
    }

    #[test]
    fn setup_for_record_is_refused() {
        let mut h = Harness::new();
        let (code, _, r) = h.send(
            "SETUP rtsp://h/cam/trackID=0 RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\n",
        );
        assert_eq!(code, 461);
        assert!(String::from_utf8_lossy(r.body()).contains("mode=record"));
        assert!(h.conn.session().is_none());
        // Offered alongside a play transport: that one is chosen.
        let (code, _, r) = h.send(
            "SETUP rtsp://h/cam/trackID=0 RTSP/1.0\nCSeq: 2\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record,RTP/AVP/TCP;unicast;interleaved=2-3;mode=play\n",
        );
        assert_eq!(code, 200);
        assert_eq!(
            header(&r, &headers::TRANSPORT),
            "RTP/AVP/TCP;unicast;interleaved=2-3"
        );
    }

    /// ffmpeg's ANNOUNCE (`-f rtsp`), trimmed: H.264 and AAC.
    const FFMPEG_ANNOUNCE: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
        a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LAHtkDxWhAAAADAEAAAAwDxYuS,aMuMsg==; profile-level-id=42C01E\r\n\
        a=control:streamid=0\r\n\
        m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
        a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=121056E500\r\n\
        a=control:streamid=1\r\n";

    fn announce(h: &mut Harness, body: &str) -> (u16, Effect) {
        let req = Request::builder(Method::Announce, Version::V1_0)
            .request_uri(url::Url::parse("rtsp://h/pub").expect("url"))
            .header(headers::CSEQ, "1")
            .header(headers::CONTENT_TYPE, "application/sdp")
            .build(body.as_bytes().to_vec());
        let mut new_id = || "pubsess".to_owned();
        let paths = paths();
        let mut ctx = Ctx {
            now: Instant::now(),
            paths: &paths,
            peer: IpAddr::from([127, 0, 0, 1]),
            local: IpAddr::from([127, 0, 0, 1]),
            server_rtp_port: 8000,
            new_session_id: &mut new_id,
        };
        let out = h.conn.handle(&req, &mut ctx);
        (out.response.status().into(), out.effect)
    }

    #[test]
    fn a_publisher_announces_sets_up_and_records() {
        let mut h = Harness::new();
        let (code, effect) = announce(&mut h, FFMPEG_ANNOUNCE);
        assert_eq!(code, 200);
        let Effect::Announce(a) = effect else {
            panic!("ANNOUNCE must ask the shell to open the publication: {effect:?}");
        };
        let Announcement { path, tracks } = *a;
        assert_eq!(path, "pub");
        let names: Vec<&str> = tracks.iter().map(|t| t.encoding_name.as_str()).collect();
        assert_eq!(names, ["H264", "MPEG4-GENERIC"]);
        assert_eq!(tracks[1].channels, Some(2));
        // The SDP's parameter sets describe the video track at once.
        assert!(tracks[0].format().track().is_some());
        // Only publishers may SETUP, and they are asked as publishers.
        let setup = |ch: &str, ctl: &str, cseq: u32| {
            format!("SETUP rtsp://h/pub/{ctl} RTSP/1.0\nCSeq: {cseq}\nTransport: RTP/AVP/TCP;unicast;interleaved={ch};mode=record\n")
        };
        let req = parse(&setup("0-1", "streamid=0", 2));
        assert_eq!(h.conn.access(&req).map(|a| a.action), Some(Action::Publish));
        let (code, _, r) = h.send(&setup("0-1", "streamid=0", 2));
        assert_eq!(code, 200);
        assert_eq!(
            header(&r, &headers::TRANSPORT),
            "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"
        );
        let id = h.conn.session().expect("session").id.clone();
        // A control that was not announced.
        let (code, _, _) = h.send(&format!("{}Session: {id}\n", setup("4-5", "streamid=7", 3)));
        assert_eq!(code, 404);
        let (code, _, _) = h.send(&format!("{}Session: {id}\n", setup("2-3", "streamid=1", 4)));
        assert_eq!(code, 200);
        // A publisher doesn't PLAY.
        let (code, _, _) = h.send(&format!(
            "PLAY rtsp://h/pub RTSP/1.0\nCSeq: 5\nSession: {id}\n"
        ));
        assert_eq!(code, 455);
        let (code, effect, _) = h.send(&format!(
            "RECORD rtsp://h/pub RTSP/1.0\nCSeq: 6\nSession: {id}\n"
        ));
        assert_eq!((code, effect), (200, Effect::Record));
        let s = h.conn.session().expect("session");
        assert_eq!(s.state, State::Recording);
        assert_eq!(
            s.tracks,
            [
                Some(TrackTransport::Tcp {
                    rtp_channel: 0,
                    rtcp_channel: 1
                }),
                Some(TrackTransport::Tcp {
                    rtp_channel: 2,
                    rtcp_channel: 3
                }),
            ]
        );
        let (code, effect, _) = h.send(&format!(
            "TEARDOWN rtsp://h/pub RTSP/1.0\nCSeq: 7\nSession: {id}\n"
        ));
        assert_eq!((code, effect), (200, Effect::Teardown));
        assert!(!h.conn.publishing());
    }

    #[test]
    fn announce_refuses_what_it_cannot_carry() {
        let mut h = Harness::new();
        let vp8 = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(announce(&mut h, vp8).0, 415);
        assert_eq!(announce(&mut h, "not sdp").0, 415);
        assert!(!h.conn.publishing());
        // UDP: the server's port pair is where RTP goes.
        assert_eq!(announce(&mut h, FFMPEG_ANNOUNCE).0, 200);
        let (code, _, r) = h.send(
            "SETUP rtsp://h/pub/streamid=0 RTSP/1.0\nCSeq: 2\nTransport: RTP/AVP/UDP;unicast;client_port=5000-5001;mode=record\n",
        );
        assert_eq!(code, 200);
        assert_eq!(
            header(&r, &headers::TRANSPORT),
            "RTP/AVP;unicast;client_port=5000-5001;server_port=8000-8001;mode=record"
        );
    }

    #[test]
    fn error_statuses() {
        let mut h = Harness::new();
        // Unknown path.
        assert_eq!(h.send("DESCRIBE rtsp://h/nope RTSP/1.0\nCSeq: 1\n").0, 404);
        // Known path whose camera is down.
        let (code, _, r) = h.send("DESCRIBE rtsp://h/down RTSP/1.0\nCSeq: 2\n");
        assert_eq!(code, 503);
        assert!(String::from_utf8_lossy(r.body()).contains("connection refused"));
        // PLAY before SETUP.
        assert_eq!(h.send("PLAY rtsp://h/cam RTSP/1.0\nCSeq: 3\n").0, 455);
        // Unknown session.
        assert_eq!(
            h.send("PLAY rtsp://h/cam RTSP/1.0\nCSeq: 4\nSession: nosuch\n")
                .0,
            454
        );
        // Multicast only: unsupported transport.
        assert_eq!(
            h.send(
                "SETUP rtsp://h/cam/trackID=0 RTSP/1.0\nCSeq: 5\nTransport: RTP/AVP;multicast\n"
            )
            .0,
            461
        );
        // No Transport header.
        assert_eq!(
            h.send("SETUP rtsp://h/cam/trackID=0 RTSP/1.0\nCSeq: 6\n").0,
            400
        );
        // Track out of range.
        assert_eq!(
            h.send("SETUP rtsp://h/cam/trackID=9 RTSP/1.0\nCSeq: 7\nTransport: RTP/AVP/TCP;interleaved=0-1\n")
                .0,
            404
        );
        // Missing CSeq: 400 and the connection closes.
        let (code, effect, _) = h.send("OPTIONS rtsp://h/cam RTSP/1.0\n");
        assert_eq!((code, effect), (400, Effect::Close));
        // RECORD without ANNOUNCE and SETUP.
        assert_eq!(h.send("RECORD rtsp://h/cam RTSP/1.0\nCSeq: 8\n").0, 455);
        // A method we don't serve.
        assert_eq!(h.send("REDIRECT rtsp://h/cam RTSP/1.0\nCSeq: 8\n").0, 501);
        // Teardown without a session.
        assert_eq!(h.send("TEARDOWN rtsp://h/cam RTSP/1.0\nCSeq: 9\n").0, 454);
    }

    #[test]
    fn out_of_order_requests() {
        let mut h = Harness::new();
        let setup0 =
            "SETUP rtsp://h/cam/trackID=0 RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP/TCP;interleaved=0-1\n";
        assert_eq!(h.send(setup0).0, 200);
        assert_eq!(
            h.send("PLAY rtsp://h/cam RTSP/1.0\nCSeq: 2\nSession: abc123\n")
                .0,
            200
        );
        // SETUP while playing.
        assert_eq!(
            h.send("SETUP rtsp://h/cam/trackID=1 RTSP/1.0\nCSeq: 3\nSession: abc123\nTransport: RTP/AVP/TCP;interleaved=2-3\n")
                .0,
            455
        );
        // A second session on the same connection without naming the first.
        assert_eq!(h.send(setup0).0, 459);
        // PAUSE, then SETUP of the other track with a clashing channel.
        assert_eq!(
            h.send("PAUSE rtsp://h/cam RTSP/1.0\nCSeq: 4\nSession: abc123\n")
                .1,
            Effect::Pause
        );
        assert_eq!(
            h.send("SETUP rtsp://h/cam/trackID=1 RTSP/1.0\nCSeq: 5\nSession: abc123\nTransport: RTP/AVP/TCP;interleaved=0-1\n")
                .0,
            461
        );
        // Mixing UDP into a TCP session is refused.
        assert_eq!(
            h.send("SETUP rtsp://h/cam/trackID=1 RTSP/1.0\nCSeq: 6\nSession: abc123\nTransport: RTP/AVP;unicast;client_port=5000-5001\n")
                .0,
            461
        );
    }

    #[test]
    fn sessions_time_out_without_requests() {
        let mut h = Harness::new();
        h.send("SETUP rtsp://h/cam/trackID=0 RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP/TCP;interleaved=0-1\n");
        assert!(!h.conn.expired(h.now + Duration::from_secs(59)));
        assert!(h.conn.expired(h.now + Duration::from_secs(61)));
        h.conn.touch(h.now + Duration::from_secs(50));
        assert!(!h.conn.expired(h.now + Duration::from_secs(100)));
    }

    #[test]
    fn what_each_request_needs_from_the_authenticator() {
        let mut h = Harness::new();
        let need = |h: &Harness, text: &str| h.conn.access(&parse(text));
        let read = |path: &str| {
            Some(Access {
                action: Action::Read,
                path: path.into(),
            })
        };
        assert_eq!(need(&h, "OPTIONS rtsp://h/cam RTSP/1.0\nCSeq: 1\n"), None);
        assert_eq!(
            need(
                &h,
                "DESCRIBE rtsp://h/cam?user=v&pass=s RTSP/1.0\nCSeq: 1\n"
            ),
            read("cam")
        );
        assert_eq!(
            need(&h, "SETUP rtsp://h/cam/trackID=1 RTSP/1.0\nCSeq: 1\n"),
            read("cam")
        );
        assert_eq!(
            need(&h, "ANNOUNCE rtsp://h/pushed RTSP/1.0\nCSeq: 1\n"),
            Some(Access {
                action: Action::Publish,
                path: "pushed".into()
            })
        );
        // No path to name: the core refuses these itself (400, 455).
        assert_eq!(need(&h, "DESCRIBE rtsp://h/ RTSP/1.0\nCSeq: 1\n"), None);
        assert_eq!(need(&h, "PLAY * RTSP/1.0\nCSeq: 1\n"), None);
        h.send("SETUP rtsp://h/cam/trackID=0 RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP/TCP;interleaved=0-1\n");
        // An aggregate PLAY is for the session's path.
        assert_eq!(
            need(&h, "PLAY * RTSP/1.0\nCSeq: 2\nSession: abc123\n"),
            read("cam")
        );
        assert_eq!(
            need(
                &h,
                "PLAY rtsp://h/down RTSP/1.0\nCSeq: 2\nSession: abc123\n"
            ),
            read("down")
        );
        // These act on a session whose SETUP was checked.
        for m in ["PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER"] {
            assert_eq!(
                need(
                    &h,
                    &format!("{m} rtsp://h/cam RTSP/1.0\nCSeq: 3\nSession: abc123\n")
                ),
                None,
                "{m}"
            );
        }
    }

    #[test]
    fn unauthorized_keeps_challenges_in_order_and_the_session() {
        let mut h = Harness::new();
        h.send("SETUP rtsp://h/cam/trackID=0 RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP/TCP;interleaved=0-1\n");
        let challenges = vec![
            "Digest realm=\"rtspgate\", nonce=\"n\", algorithm=SHA-256".to_owned(),
            "Digest realm=\"rtspgate\", nonce=\"n\", algorithm=MD5".to_owned(),
            "Basic realm=\"rtspgate\"".to_owned(),
        ];
        let out = h.conn.unauthorized(
            &parse("PLAY rtsp://h/cam RTSP/1.0\nCSeq: 7\nSession: abc123\n"),
            challenges.clone(),
        );
        assert_eq!(u16::from(out.response.status()), 401);
        assert_eq!(out.effect, Effect::None);
        assert_eq!(header(&out.response, &headers::CSEQ), "7");
        assert_eq!(out.challenges, challenges);
        assert_eq!(h.conn.session().unwrap().state, State::Ready);
        // Every other answer carries no challenge.
        let (code, _, _) = h.send("PLAY rtsp://h/cam RTSP/1.0\nCSeq: 8\nSession: abc123\n");
        assert_eq!(code, 200);
        // Without CSeq the request is malformed before it is unauthorized.
        let out = h
            .conn
            .unauthorized(&parse("DESCRIBE rtsp://h/cam RTSP/1.0\n"), challenges);
        assert_eq!(
            (u16::from(out.response.status()), out.effect),
            (400, Effect::Close)
        );
    }

    #[test]
    fn interleaved_only_connections_refuse_udp() {
        let mut h = Harness::new();
        h.conn = Conn::new(Duration::from_secs(60)).interleaved_only();
        let (code, _, r) = h.send(
            "SETUP rtsp://h/cam/trackID=0 RTSP/1.0\nCSeq: 1\nTransport: RTP/AVP;unicast;client_port=5000-5001\n",
        );
        assert_eq!(code, 461);
        assert!(String::from_utf8_lossy(r.body()).contains("interleaved only"));
        assert!(h.conn.session().is_none());
        // Offered both (UDP preferred): TCP is chosen.
        let (code, _, r) = h.send(
            "SETUP rtsp://h/cam/trackID=0 RTSP/1.0\nCSeq: 2\nTransport: RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1\n",
        );
        assert_eq!(code, 200);
        assert_eq!(
            header(&r, &headers::TRANSPORT),
            "RTP/AVP/TCP;unicast;interleaved=0-1"
        );
    }

    #[test]
    fn content_base_drops_the_query() {
        let mut h = Harness::new();
        let (code, _, r) = h.send("DESCRIBE rtsp://h/cam?user=v&pass=secret RTSP/1.0\nCSeq: 1\n");
        assert_eq!(code, 200);
        assert_eq!(header(&r, &headers::CONTENT_BASE), "rtsp://h/cam/");
    }

    #[test]
    fn request_targets() {
        let t = |s: &str| parse_target(&url::Url::parse(s).unwrap());
        assert_eq!(
            t("rtsp://h:1/cam/trackID=2"),
            Some(Target {
                path: "cam".into(),
                track: Some(2)
            })
        );
        assert_eq!(
            t("rtsp://h/cam/"),
            Some(Target {
                path: "cam".into(),
                track: None
            })
        );
        assert_eq!(t("rtsp://h/"), None);
        assert_eq!(t("rtsp://h/cam/other"), None);
        assert_eq!(t("rtsp://h/c%20m"), None);
    }
}
