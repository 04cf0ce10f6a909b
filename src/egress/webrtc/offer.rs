//! What rtspgate needs to know about a WHEP offer before str0m sees it: the
//! media sections with their codecs (RFC 8866 `m=`, `a=rtpmap`, `a=fmtp`),
//! and the trickle-ICE SDP fragments of `PATCH` (RFC 8840 §9, RFC 9725 §4.3.1).
//!
//! This is deliberately a summary, not a full SDP parser: str0m parses and
//! validates the whole offer afterwards. Here we only read enough to choose
//! which codec to send on which `m=` line (see [`super::codecs`]).

use std::collections::BTreeMap;

/// Why an SDP body was rejected (WHEP answers 400 Bad Request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SdpError(pub String);

fn bad(msg: impl Into<String>) -> SdpError {
    SdpError(msg.into())
}

/// Largest offer accepted, in bytes. Browser offers are 3–8 kB; this bounds
/// the work done on a hostile body.
pub const MAX_SDP_LEN: usize = 64 * 1024;

/// `m=` media type of a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    Audio,
    Video,
    /// `application` (data channels) or anything else we never send on.
    Other,
}

/// Direction attribute of a media section (RFC 8866 §6.7), from the
/// offerer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    RecvOnly,
    SendOnly,
    Inactive,
}

impl Direction {
    /// Whether the offerer is willing to receive on this section.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// Whether the offerer is willing to send on this section (a WHIP
    /// publisher's media).
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

/// One payload format offered on a media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// RTP payload type, 0..=127.
    pub pt: u8,
    /// Encoding name from `a=rtpmap`, lowercased (`h264`, `opus`, `pcmu`, `rtx`, ...);
    /// for static payload types without rtpmap, the RFC 3551 name.
    pub encoding: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Channels (audio), from the rtpmap's third field; 1 when absent.
    pub channels: u16,
    /// `a=fmtp` parameters, names lowercased, in offer order.
    pub fmtp: Vec<(String, String)>,
}

impl Format {
    /// The value of fmtp parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.fmtp
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One `m=` section of the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub kind: SectionKind,
    /// `a=mid` value, if any (BUNDLE requires one, RFC 9143).
    pub mid: Option<String>,
    /// Port 0 marks a rejected/disabled section (RFC 8866 §5.14).
    pub port_zero: bool,
    pub direction: Direction,
    /// Payload formats in the offerer's order of preference.
    pub formats: Vec<Format>,
}

impl Section {
    /// Whether rtspgate could send media on this section at all.
    pub fn usable(&self) -> bool {
        !self.port_zero && self.direction.receives() && self.kind != SectionKind::Other
    }

    /// The RTX payload type associated with `pt` (`a=fmtp:<rtx> apt=<pt>`, RFC 4588 §8.6).
    pub fn rtx_for(&self, pt: u8) -> Option<u8> {
        self.formats
            .iter()
            .filter(|f| f.encoding == "rtx")
            .find(|f| f.param("apt").and_then(|v| v.parse::<u8>().ok()) == Some(pt))
            .map(|f| f.pt)
    }
}

/// The parts of a WHEP offer used for codec choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferSummary {
    pub sections: Vec<Section>,
    /// Session- or first-section-level `a=ice-ufrag` (RFC 8839 §5.4).
    pub ice_ufrag: Option<String>,
}

/// RFC 3551 §6 names of the static payload types WebRTC endpoints offer
/// without an rtpmap line (encoding, clock rate).
fn static_pt(pt: u8) -> Option<(&'static str, u32)> {
    match pt {
        0 => Some(("pcmu", 8000)),
        8 => Some(("pcma", 8000)),
        9 => Some(("g722", 8000)),
        _ => None,
    }
}

/// Splits an SDP body into lines, accepting CRLF (RFC 8866 §5) and bare LF.
fn lines(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
}

/// Parses an offer's media sections and ICE credentials.
///
/// Errors (→ 400): not UTF-8-clean SDP (`v=0` first), a line that is not
/// `<letter>=<value>`, a malformed `m=` line, or no `m=` line at all.
/// Unknown attributes are ignored; payload types listed on the `m=` line
/// without rtpmap (other than static ones) are skipped.
pub fn parse_offer(sdp: &str) -> Result<OfferSummary, SdpError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(bad(format!(
            "the offer is {} bytes, more than the {MAX_SDP_LEN} accepted",
            sdp.len()
        )));
    }
    let mut it = lines(sdp);
    if it.next().map(str::trim) != Some("v=0") {
        return Err(bad("not an SDP offer: the first line must be v=0"));
    }

    struct Building {
        section: Section,
        /// PTs from the m= line, in order.
        pts: Vec<u8>,
        rtpmap: BTreeMap<u8, (String, u32, u16)>,
        fmtp: BTreeMap<u8, Vec<(String, String)>>,
    }
    let mut sections: Vec<Building> = Vec::new();
    let mut ice_ufrag = None;
    let mut session_direction = Direction::SendRecv;

    for line in it {
        let (key, value) = match line.split_once('=') {
            Some((k, v)) if k.len() == 1 && k.as_bytes()[0].is_ascii_lowercase() => (k, v),
            _ => return Err(bad(format!("malformed SDP line {:?}", truncate(line)))),
        };
        match key {
            "m" => {
                let mut f = value.split_ascii_whitespace();
                let (Some(media), Some(port), Some(_proto)) = (f.next(), f.next(), f.next()) else {
                    return Err(bad(format!("malformed m= line {:?}", truncate(line))));
                };
                let port: u32 = port
                    .split('/')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .filter(|&p| p <= 65535)
                    .ok_or_else(|| bad(format!("bad port in m= line {:?}", truncate(line))))?;
                let kind = match media {
                    "audio" => SectionKind::Audio,
                    "video" => SectionKind::Video,
                    _ => SectionKind::Other,
                };
                let pts = if kind == SectionKind::Other {
                    Vec::new()
                } else {
                    f.map(|p| {
                        p.parse::<u8>()
                            .ok()
                            .filter(|&p| p <= 127)
                            .ok_or_else(|| bad(format!("bad payload type {p:?} in m= line")))
                    })
                    .collect::<Result<_, _>>()?
                };
                sections.push(Building {
                    section: Section {
                        kind,
                        mid: None,
                        port_zero: port == 0,
                        direction: session_direction,
                        formats: Vec::new(),
                    },
                    pts,
                    rtpmap: BTreeMap::new(),
                    fmtp: BTreeMap::new(),
                });
            }
            "a" => {
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                let direction = match name {
                    "sendrecv" => Some(Direction::SendRecv),
                    "recvonly" => Some(Direction::RecvOnly),
                    "sendonly" => Some(Direction::SendOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                match (sections.last_mut(), name) {
                    (None, "ice-ufrag") => ice_ufrag = Some(arg.trim().to_owned()),
                    (None, _) => {
                        if let Some(d) = direction {
                            session_direction = d;
                        }
                    }
                    (Some(b), _) => {
                        if let Some(d) = direction {
                            b.section.direction = d;
                        }
                        match name {
                            "mid" => b.section.mid = Some(arg.trim().to_owned()),
                            "ice-ufrag" if ice_ufrag.is_none() => {
                                ice_ufrag = Some(arg.trim().to_owned())
                            }
                            "rtpmap" => {
                                if let Some((pt, enc)) = parse_rtpmap(arg) {
                                    b.rtpmap.insert(pt, enc);
                                }
                            }
                            "fmtp" => {
                                if let Some((pt, params)) = parse_fmtp(arg) {
                                    b.fmtp.insert(pt, params);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if sections.is_empty() {
        return Err(bad("the offer has no m= line"));
    }
    let sections = sections
        .into_iter()
        .map(|mut b| {
            b.section.formats = b
                .pts
                .iter()
                .filter_map(|&pt| {
                    let (encoding, clock_rate, channels) = match b.rtpmap.get(&pt) {
                        Some(e) => e.clone(),
                        None => {
                            let (name, rate) = static_pt(pt)?;
                            (name.to_owned(), rate, 1)
                        }
                    };
                    Some(Format {
                        pt,
                        encoding,
                        clock_rate,
                        channels,
                        fmtp: b.fmtp.remove(&pt).unwrap_or_default(),
                    })
                })
                .collect();
            b.section
        })
        .collect();
    Ok(OfferSummary {
        sections,
        ice_ufrag,
    })
}

/// `a=rtpmap:<pt> <name>/<clock>[/<channels>]` (RFC 8866 §6.6).
fn parse_rtpmap(arg: &str) -> Option<(u8, (String, u32, u16))> {
    let (pt, enc) = arg.trim().split_once(' ')?;
    let pt: u8 = pt.parse().ok().filter(|&p| p <= 127)?;
    let mut parts = enc.trim().split('/');
    let name = parts.next()?.to_ascii_lowercase();
    let clock_rate: u32 = parts.next()?.parse().ok()?;
    let channels: u16 = match parts.next() {
        Some(c) => c.parse().ok()?,
        None => 1,
    };
    Some((pt, (name, clock_rate, channels)))
}

/// `a=fmtp:<pt> k=v;k=v` (RFC 8866 §6.15); names lowercased, values trimmed.
fn parse_fmtp(arg: &str) -> Option<(u8, Vec<(String, String)>)> {
    let (pt, params) = arg.trim().split_once(' ')?;
    let pt: u8 = pt.parse().ok().filter(|&p| p <= 127)?;
    let params = params
        .split(';')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    Some((pt, params))
}

fn truncate(line: &str) -> &str {
    match line.char_indices().nth(60) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// A trickle-ICE SDP fragment (`application/trickle-ice-sdpfrag`, RFC 8840 §9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpFrag {
    pub ice_ufrag: Option<String>,
    pub ice_pwd: Option<String>,
    /// `candidate:...` attribute values (without the `a=`), RFC 8839 §5.1.
    pub candidates: Vec<String>,
    pub end_of_candidates: bool,
}

/// Parses a trickle-ICE fragment. Lines other than `a=` and `m=` are an
/// error; attributes we do not use (`a=mid`, `a=group`, ...) are ignored.
pub fn parse_sdpfrag(body: &str) -> Result<SdpFrag, SdpError> {
    if body.len() > MAX_SDP_LEN {
        return Err(bad("the SDP fragment is too large"));
    }
    let mut frag = SdpFrag::default();
    for line in lines(body) {
        let Some(value) = line.strip_prefix("a=") else {
            if line.starts_with("m=") {
                continue;
            }
            return Err(bad(format!(
                "malformed SDP fragment line {:?}",
                truncate(line)
            )));
        };
        let (name, arg) = value.split_once(':').unwrap_or((value, ""));
        match name {
            "ice-ufrag" => frag.ice_ufrag = Some(arg.trim().to_owned()),
            "ice-pwd" => frag.ice_pwd = Some(arg.trim().to_owned()),
            "candidate" => frag.candidates.push(value.trim().to_owned()),
            "end-of-candidates" => frag.end_of_candidates = true,
            _ => {}
        }
    }
    Ok(frag)
}

/// SDP attribute carrying rtspgate's plain-words note on a media section
/// of the answer, e.g. why its track is not sent. RFC 8866 §5.13: unknown
/// attributes are ignored by receivers, unlike an `i=` line, which some
/// SDP parsers (str0m's) reject inside a media section.
pub const INFO_ATTRIBUTE: &str = "rtspgate-info";

/// Adds `a=rtspgate-info:<info>` after the `a=mid:<mid>` line of the answer.
/// `info` must be one line; CR/LF are replaced by spaces. Returns the answer
/// unchanged if no section has that mid.
pub fn add_media_info(answer: &str, mid: &str, info: &str) -> String {
    let info: String = info
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let mut out = String::with_capacity(answer.len() + info.len() + 24);
    let mut done = false;
    for (i, l) in answer.split("\r\n").enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str(l);
        if !done && l.strip_prefix("a=mid:").is_some_and(|v| v.trim() == mid) {
            out.push_str("\r\na=");
            out.push_str(INFO_ATTRIBUTE);
            out.push(':');
            out.push_str(&info);
            done = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Chromium recvonly WHEP offer (trimmed), CRLF line ends.
    pub(crate) const CHROME_OFFER: &str = include_str!("testdata/chrome_offer.sdp");

    #[test]
    fn parses_chrome_offer() {
        let o = parse_offer(CHROME_OFFER).unwrap();
        assert_eq!(o.ice_ufrag.as_deref(), Some("Qx7w"));
        assert_eq!(o.sections.len(), 2);
        let v = &o.sections[0];
        assert_eq!(v.kind, SectionKind::Video);
        assert_eq!(v.mid.as_deref(), Some("0"));
        assert_eq!(v.direction, Direction::RecvOnly);
        assert!(v.usable());
        assert_eq!(v.formats.len(), 12);
        let h = v.formats.iter().find(|f| f.pt == 45).unwrap();
        assert_eq!(h.encoding, "h264");
        assert_eq!(h.clock_rate, 90000);
        assert_eq!(h.param("profile-level-id"), Some("f4001f"));
        assert_eq!(h.param("PACKETIZATION-MODE"), Some("1"));
        assert_eq!(v.rtx_for(45), Some(46));
        assert_eq!(v.rtx_for(96), Some(97));
        assert_eq!(v.rtx_for(1), None);
        let a = &o.sections[1];
        assert_eq!(a.kind, SectionKind::Audio);
        let opus = &a.formats[0];
        assert_eq!(
            (opus.encoding.as_str(), opus.clock_rate, opus.channels),
            ("opus", 48000, 2)
        );
        assert!(a.formats.iter().any(|f| f.pt == 0 && f.encoding == "pcmu"));
    }

    #[test]
    fn static_payload_types_without_rtpmap_and_lf_only() {
        let o = parse_offer("v=0\nm=audio 9 RTP/AVP 0 8 99\na=sendrecv\n").unwrap();
        let f = &o.sections[0].formats;
        assert_eq!(f.len(), 2, "99 has no rtpmap and is not static");
        assert_eq!((f[0].encoding.as_str(), f[0].clock_rate), ("pcmu", 8000));
        assert_eq!(f[1].encoding, "pcma");
    }

    #[test]
    fn session_level_direction_and_port_zero() {
        let o = parse_offer(
            "v=0\r\na=inactive\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\na=rtpmap:96 H264/90000\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
        )
        .unwrap();
        assert!(o.sections[0].port_zero);
        assert_eq!(o.sections[0].direction, Direction::Inactive);
        assert!(!o.sections[0].usable());
        assert!(o.sections[1].usable());
        assert_eq!(o.sections[2].kind, SectionKind::Other);
        assert!(!o.sections[2].usable());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "hello",
            "v=0\r\n",
            "v=0\r\nm=video\r\n",
            "v=0\r\nm=video x RTP/AVP 96\r\n",
            "v=0\r\nm=video 9 RTP/AVP 300\r\n",
            "v=0\r\nm=video 9 RTP/AVP 96\r\nthis is not sdp\r\n",
            "v=1\r\nm=video 9 RTP/AVP 96\r\n",
        ] {
            assert!(parse_offer(bad).is_err(), "{bad:?}");
        }
        let huge = format!("v=0\r\nm=video 9 RTP/AVP 96\r\n{}", "a=x\r\n".repeat(20000));
        assert!(parse_offer(&huge).is_err());
    }

    #[test]
    fn sdpfrag() {
        let f = parse_sdpfrag(
            "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\na=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\na=end-of-candidates\r\n",
        )
        .unwrap();
        assert_eq!(f.ice_ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.ice_pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(f.candidates.len(), 1);
        assert!(f.candidates[0].starts_with("candidate:1387637174 1 udp"));
        assert!(f.end_of_candidates);
        assert!(parse_sdpfrag("garbage").is_err());
        assert_eq!(parse_sdpfrag("").unwrap(), SdpFrag::default());
    }

    #[test]
    fn media_info_goes_after_the_mid() {
        let answer =
            "v=0\r\nm=video 9 X 96\r\na=mid:0\r\nm=audio 0 X 0\r\na=mid:1\r\na=sendonly\r\n";
        let out = add_media_info(answer, "1", "aac is not\nsent");
        assert_eq!(
            out,
            "v=0\r\nm=video 9 X 96\r\na=mid:0\r\nm=audio 0 X 0\r\na=mid:1\r\na=rtspgate-info:aac is not sent\r\na=sendonly\r\n"
        );
        assert_eq!(add_media_info(answer, "7", "x"), answer);
    }
}
