//! The SDP (RFC 8866) of a `DESCRIBE` response (RFC 2326 §C.1) and the RTP
//! payload type and control URL of each track; the tracks of an `ANNOUNCE`
//! ([`announced_tracks`]).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sdp_types::{Attribute, Connection, Media, Origin, Session, Time};

use crate::bus::{Codec, MediaKind, RtpSource, Track};

/// RTP payload type for track `index`: 0 for PCMU and 8 for PCMA at 8000 Hz
/// mono, 26 for JPEG at 90 000 Hz (static types, RFC 3551 §6 Tables 4 and
/// 5), else the dynamic type
/// `96 + index % 32` (96..=127; each track is its own RTP session, so the
/// wrap-around past 32 tracks is harmless).
pub fn payload_type(index: usize, track: &Track) -> u8 {
    match track.codec {
        Codec::Pcmu { channels: 1 } if track.clock_rate == 8000 => 0,
        Codec::Pcma { channels: 1 } if track.clock_rate == 8000 => 8,
        Codec::Jpeg if track.clock_rate == 90_000 => 26,
        // `index % 32` < 32, so the cast and the sum stay within 96..=127.
        _ => 96 + (index % 32) as u8,
    }
}

/// Control URL suffix of track `index` (the `a=control:` of its media
/// section, relative to the presentation URL): `trackID={index}`.
pub fn track_control(index: usize) -> String {
    format!("trackID={index}")
}

/// Writes the SDP (RFC 8866) for a `DESCRIBE` response of a live stream
/// with `tracks`, media sections in track order.
///
/// Session level: `v=0`, `o=- <id> <version> IN IP4|IP6 <server_ip>` (id: a
/// stable hash of `session_name`; version: a hash of the media sections, so
/// it changes with the codec parameters), `s=<session_name>` (`s= ` if
/// empty), `c=IN IP4 0.0.0.0` (`IP6 ::` for an IPv6 `server_ip`), `t=0 0`,
/// `a=tool:rtspgate`, `a=type:broadcast`, `a=control:*`, `a=range:npt=now-`.
///
/// Per track `i`: `m=video|audio 0 RTP/AVP <pt>` with `pt` from
/// [`payload_type`], `a=rtpmap`, `a=fmtp` when the format has parameters,
/// `a=control:trackID=<i>`; video adds `a=framerate:` (RFC 8866 §6.8) and
/// `a=x-dimensions:<w>,<h>` when known.
///
/// - H.264 (RFC 6184 §8.2.1): `H264/90000`, `packetization-mode=1;
///   profile-level-id=<SPS bytes 1..4 in hex>;sprop-parameter-sets=<b64 SPS>,<b64 PPS>`.
/// - H.265 (RFC 7798 §7.2.1): `H265/90000`, `sprop-vps=..;sprop-sps=..;sprop-pps=..`.
/// - AAC (RFC 3640 §4.1): `mpeg4-generic/<clock>/<channels>`, `streamtype=5;
///   profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;
///   indexdeltalength=3;config=<AudioSpecificConfig in hex>`.
/// - G.711 (RFC 3551 §4.5.14): `PCMA/<clock>` or `PCMU/<clock>`, `/<channels>` if more than one.
/// - Opus (RFC 7587 §7): `opus/48000/2`, `sprop-stereo=1` for stereo.
/// - JPEG (RFC 2435, RFC 3551 §6): `JPEG/90000` on payload type 26, no
///   `fmtp` (each packet carries the type, size and tables).
///
/// Empty parameter sets are left out rather than written empty.
pub fn describe(session_name: &str, server_ip: IpAddr, tracks: &[Arc<Track>]) -> String {
    let medias: Vec<Media> = tracks
        .iter()
        .enumerate()
        .map(|(i, t)| media(i, t))
        .collect();
    let version = medias
        .iter()
        .flat_map(|m| &m.attributes)
        .flat_map(|a| [a.attribute.as_str(), a.value.as_deref().unwrap_or(""), "\n"])
        .fold(FNV_OFFSET, |h, s| fnv1a(h, s.as_bytes()));
    // Origin fields are decimal numbers below 2^63 (RFC 8866 §5.2).
    let origin = Origin::with_ip_addr(
        fnv1a(FNV_OFFSET, session_name.as_bytes()) >> 1,
        version >> 1,
        server_ip,
    );
    let name = if session_name.is_empty() {
        " "
    } else {
        session_name
    };
    let mut session = Session::new(origin, name);
    session.connection = Some(Connection::from_ip_addr(match server_ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }));
    session.times.push(Time::new(0, 0));
    session.attributes = vec![
        Attribute::with_value("tool", "rtspgate"),
        Attribute::with_value("type", "broadcast"),
        Attribute::with_value("control", "*"),
        Attribute::with_value("range", "npt=now-"),
    ];
    session.medias = medias;
    session.to_string()
}

/// The media section of track `index`.
fn media(index: usize, track: &Track) -> Media {
    let pt = payload_type(index, track);
    let clock = track.clock_rate;
    let (kind, rtpmap, fmtp) = match &track.codec {
        Codec::H264 { sps, pps } => {
            let mut f = "packetization-mode=1".to_owned();
            if let Some([p, c, l]) = track.h264().map(|s| s.profile_level_id()) {
                let _ = write!(f, ";profile-level-id={p:02X}{c:02X}{l:02X}");
            }
            let sets = b64_list(&[sps, pps]);
            if !sets.is_empty() {
                let _ = write!(f, ";sprop-parameter-sets={sets}");
            }
            ("video", format!("H264/{clock}"), Some(f))
        }
        Codec::H265 { vps, sps, pps } => {
            let f = [("sprop-vps", vps), ("sprop-sps", sps), ("sprop-pps", pps)]
                .iter()
                .filter(|(_, p)| !p.is_empty())
                .map(|(k, p)| format!("{k}={}", BASE64.encode(p)))
                .collect::<Vec<_>>()
                .join(";");
            (
                "video",
                format!("H265/{clock}"),
                (!f.is_empty()).then_some(f),
            )
        }
        Codec::Aac { config, channels } => {
            let mut f = "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;\
                         indexlength=3;indexdeltalength=3;config="
                .to_owned();
            for b in config.iter() {
                let _ = write!(f, "{b:02X}");
            }
            (
                "audio",
                format!("mpeg4-generic/{clock}/{channels}"),
                Some(f),
            )
        }
        Codec::Pcma { channels } => ("audio", g711("PCMA", clock, *channels), None),
        Codec::Pcmu { channels } => ("audio", g711("PCMU", clock, *channels), None),
        Codec::Opus { channels } => (
            "audio",
            "opus/48000/2".to_owned(),
            (*channels >= 2).then(|| "sprop-stereo=1".to_owned()),
        ),
        Codec::Jpeg => ("video", format!("JPEG/{clock}"), None),
    };
    let mut m = Media {
        media: kind.to_owned(),
        port: 0,
        num_ports: None,
        proto: "RTP/AVP".to_owned(),
        fmt: pt.to_string(),
        media_title: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    };
    m.add_attribute_with_value("rtpmap", format!("{pt} {rtpmap}"));
    if let Some(f) = fmtp {
        m.add_attribute_with_value("fmtp", format!("{pt} {f}"));
    }
    if track.kind() == MediaKind::Video {
        if let Some(fps) = track.frame_rate.filter(|f| f.is_finite() && *f > 0.0) {
            m.add_attribute_with_value("framerate", decimal(fps));
        }
        if let Some((w, h)) = track.dimensions {
            m.add_attribute_with_value("x-dimensions", format!("{w},{h}"));
        }
    }
    m.add_attribute_with_value("control", track_control(index));
    m
}

/// `PCMA/8000`, `PCMU/16000/2`: channels only when more than one (RFC 3551 §4.1).
/// The tracks of an `ANNOUNCE` body (RFC 2326 §10.3, SDP of RFC 8866): per
/// media section, its format (the first payload type's `a=rtpmap`, or the
/// static types 0 PCMU, 8 PCMA, 26 JPEG of RFC 3551 §6; `a=fmtp`;
/// `a=framerate`) and its `a=control` (the media's index when absent).
///
/// `Err` in plain words: not SDP, no media, more than 16 media sections, or
/// a format rtspgate can't carry (the RTP receiver's formats: H264, H265,
/// MPEG4-GENERIC, OPUS, PCMU, PCMA, JPEG).
pub fn announced_tracks(body: &[u8]) -> Result<(Vec<RtpSource>, Vec<String>), String> {
    const CARRIED: [&str; 7] = [
        "H264",
        "H265",
        "MPEG4-GENERIC",
        "OPUS",
        "PCMU",
        "PCMA",
        "JPEG",
    ];
    let parsed = Session::parse(body).map_err(|e| format!("the SDP does not parse: {e}"))?;
    if parsed.medias.is_empty() {
        return Err("the SDP announces no media".into());
    }
    if parsed.medias.len() > 16 {
        return Err("more than 16 media sections".into());
    }
    let mut tracks = Vec::new();
    let mut controls = Vec::new();
    for (i, m) in parsed.medias.iter().enumerate() {
        let pt = m.fmt.split_whitespace().next().unwrap_or("");
        let attr = |name: &'static str| -> Vec<&str> {
            m.attributes
                .iter()
                .filter(|a| a.attribute == name)
                .filter_map(|a| a.value.as_deref())
                .collect()
        };
        let for_pt = |name: &'static str| {
            attr(name).into_iter().find_map(|v| {
                let (fmt, rest) = v.split_once(' ')?;
                (fmt == pt).then(|| rest.trim().to_owned())
            })
        };
        let (encoding, clock, channels) = match for_pt("rtpmap") {
            Some(map) => {
                let mut parts = map.split('/');
                let name = parts.next().unwrap_or("").to_ascii_uppercase();
                let clock = parts.next().and_then(|c| c.trim().parse::<u32>().ok());
                let channels = parts.next().and_then(|c| c.trim().parse::<u16>().ok());
                (name, clock, channels)
            }
            None => match pt {
                "0" => ("PCMU".to_owned(), Some(8000), None),
                "8" => ("PCMA".to_owned(), Some(8000), None),
                "26" => ("JPEG".to_owned(), Some(90_000), None),
                _ => (String::new(), None, None),
            },
        };
        let Some(clock_rate) = clock.filter(|c| *c > 0) else {
            return Err(format!(
                "media {i} ({} {pt}) has no usable a=rtpmap",
                m.media
            ));
        };
        if !CARRIED.contains(&encoding.as_str()) {
            return Err(format!(
                "media {i} is {encoding:?}; rtspgate takes {}",
                CARRIED.join(", ")
            ));
        }
        tracks.push(RtpSource {
            encoding_name: encoding,
            clock_rate,
            channels,
            fmtp: for_pt("fmtp"),
            framerate: attr("framerate")
                .first()
                .and_then(|f| f.trim().parse::<f64>().ok())
                .filter(|f| f.is_finite() && *f > 0.0),
        });
        controls.push(
            attr("control")
                .first()
                .map(|c| c.trim().trim_end_matches('/').to_owned())
                .unwrap_or_else(|| i.to_string()),
        );
    }
    Ok((tracks, controls))
}

fn g711(name: &str, clock: u32, channels: u16) -> String {
    if channels > 1 {
        format!("{name}/{clock}/{channels}")
    } else {
        format!("{name}/{clock}")
    }
}

/// Comma-separated base64 (RFC 4648 §4, padded) of the non-empty `nals`.
fn b64_list(nals: &[&bytes::Bytes]) -> String {
    nals.iter()
        .filter(|n| !n.is_empty())
        .map(|n| BASE64.encode(n))
        .collect::<Vec<_>>()
        .join(",")
}

/// `25`, `29.97`, `12.5`: at most 3 decimals, no trailing zeros.
fn decimal(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a of `data` continuing from `h` (start with [`FNV_OFFSET`]),
/// for stable origin numbers.
fn fnv1a(h: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use bytes::Bytes;
    use retina::codec::{Depacketizer, ParametersRef, VideoParametersCodec};

    use super::*;
    use crate::codec::tests::{hex, H264_PPS, H264_SPS, H265_PPS, H265_SPS, H265_VPS};

    fn track(codec: Codec, clock_rate: u32) -> Arc<Track> {
        Arc::new(Track::new(codec, clock_rate))
    }

    /// One media section as retina's DESCRIBE parser reads it
    /// (retina-0.4.21 src/client/parse.rs `parse_media`).
    struct Parsed {
        media: String,
        pt: u8,
        encoding: String,
        clock: u32,
        channels: Option<NonZeroU16>,
        fmtp: Option<String>,
        control: Option<String>,
    }

    fn parse_media(m: &sdp_types::Media) -> Parsed {
        assert_eq!(m.proto, "RTP/AVP");
        assert_eq!(m.port, 0);
        let pt_str = m.fmt.split_ascii_whitespace().next().unwrap();
        let with_pt = |name: &str| {
            m.get_attribute_values(name)
                .flatten()
                .filter_map(|v| v.split_once(' '))
                .find(|(p, _)| *p == pt_str)
                .map(|(_, v)| v.to_owned())
        };
        let rtpmap = with_pt("rtpmap").expect("rtpmap for the payload type");
        let mut parts = rtpmap.split('/');
        let encoding = parts.next().unwrap().to_ascii_lowercase();
        let clock = parts.next().unwrap().parse().unwrap();
        let channels = parts.next().map(|c| c.parse().unwrap());
        assert!(parts.next().is_none());
        Parsed {
            media: m.media.clone(),
            pt: pt_str.parse().unwrap(),
            encoding,
            clock,
            channels,
            fmtp: with_pt("fmtp"),
            control: m
                .get_first_attribute_value("control")
                .flatten()
                .map(str::to_owned),
        }
    }

    fn depacketizer(p: &Parsed) -> Depacketizer {
        Depacketizer::new(
            &p.media,
            &p.encoding,
            p.clock,
            p.channels,
            p.fmtp.as_deref(),
        )
        .expect("retina accepts the media section")
    }

    #[test]
    fn payload_types_and_controls() {
        let pcmu = track(Codec::Pcmu { channels: 1 }, 8000);
        let pcma = track(Codec::Pcma { channels: 1 }, 8000);
        assert_eq!(payload_type(0, &pcmu), 0);
        assert_eq!(payload_type(3, &pcma), 8);
        assert_eq!(
            payload_type(1, &track(Codec::Pcma { channels: 1 }, 16000)),
            97
        );
        assert_eq!(
            payload_type(2, &track(Codec::Pcmu { channels: 2 }, 8000)),
            98
        );
        let h264 = track(crate::codec::tests::h264_codec(), 90_000);
        assert_eq!(payload_type(0, &h264), 96);
        assert_eq!(payload_type(31, &h264), 127);
        assert_eq!(payload_type(32, &h264), 96);
        assert_eq!(payload_type(usize::MAX, &h264), 127);
        assert_eq!(payload_type(5, &track(Codec::Jpeg, 90_000)), 26);
        assert_eq!(payload_type(0, &track(Codec::Jpeg, 8000)), 96);
        assert_eq!(track_control(0), "trackID=0");
        assert_eq!(track_control(12), "trackID=12");
    }

    /// RFC 2435 / RFC 3551 §6: static payload type 26, `JPEG/90000`, no
    /// fmtp; the size (from the first image) as `x-dimensions`.
    #[test]
    fn jpeg_is_payload_type_26() {
        let jpeg = Arc::new(Track {
            dimensions: Some((640, 480)),
            ..Track::new(Codec::Jpeg, 90_000)
        });
        let text = describe("cam", "192.0.2.10".parse().unwrap(), &[jpeg]);
        let sdp = sdp_types::Session::parse(text.as_bytes()).expect("valid SDP");
        let m = &sdp.medias[0];
        assert_eq!(
            (m.media.as_str(), m.fmt.as_str()),
            ("video", "26"),
            "{text}"
        );
        assert_eq!(
            m.get_first_attribute_value("rtpmap"),
            Some(Some("26 JPEG/90000"))
        );
        assert_eq!(m.get_first_attribute_value("fmtp"), None);
        assert_eq!(
            m.get_first_attribute_value("x-dimensions"),
            Some(Some("640,480"))
        );
        // Our own depacketizer takes it as the ingest would.
        let format = crate::codec::RtpFormat {
            encoding_name: "JPEG",
            clock_rate: 90_000,
            channels: None,
            fmtp: None,
        };
        assert!(crate::codec::Depacketizer::new(&format).is_ok());
    }

    #[test]
    fn retina_accepts_the_description() {
        // Frame rates as an SDP would give them (the fixtures' SPSs have
        // no VUI timing); dimensions from the SPSs.
        let h264 = Arc::new(Track {
            frame_rate: Some(30000.0 / 1001.0),
            ..Track::new(crate::codec::tests::h264_codec(), 90_000)
        });
        let h265 = Arc::new(Track {
            frame_rate: Some(25.0),
            ..Track::new(crate::codec::tests::h265_codec(), 90_000)
        });
        let tracks = vec![
            h264,
            track(
                Codec::Aac {
                    config: hex("1190"),
                    channels: 2,
                },
                48_000,
            ),
            track(Codec::Pcma { channels: 1 }, 8000),
            h265,
            track(Codec::Pcmu { channels: 2 }, 16000),
            track(Codec::Opus { channels: 2 }, 48000),
        ];
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let text = describe("cam1", ip, &tracks);
        assert!(text.starts_with("v=0\r\no=- "), "{text}");
        assert!(text.ends_with("\r\n"));
        assert!(!text.contains("\r\n\r\n"));
        assert_eq!(text, describe("cam1", ip, &tracks), "deterministic");

        let sdp = sdp_types::Session::parse(text.as_bytes()).expect("valid SDP");
        assert_eq!(sdp.origin.unicast_address, "192.0.2.10");
        assert_eq!(sdp.origin.addrtype, sdp_types::AddrType::Ip4);
        assert!(sdp.origin.sess_id.parse::<u64>().is_ok());
        assert_eq!(sdp.session_name, "cam1");
        let c = sdp.connection.as_ref().unwrap();
        assert_eq!(c.connection_address, "0.0.0.0");
        assert_eq!((sdp.times[0].start_time, sdp.times[0].stop_time), (0, 0));
        assert_eq!(sdp.get_first_attribute_value("control"), Some(Some("*")));
        assert_eq!(
            sdp.get_first_attribute_value("tool"),
            Some(Some("rtspgate"))
        );
        assert_eq!(
            sdp.get_first_attribute_value("range"),
            Some(Some("npt=now-"))
        );
        assert_eq!(sdp.medias.len(), tracks.len());

        let p: Vec<Parsed> = sdp.medias.iter().map(parse_media).collect();
        for (i, (p, t)) in p.iter().zip(&tracks).enumerate() {
            assert_eq!(p.pt, payload_type(i, t));
            assert_eq!(p.control.as_deref(), Some(track_control(i).as_str()));
        }

        // H.264: same SPS/PPS, dimensions from the SPS, frame rate attribute.
        let fmtp = p[0].fmtp.as_deref().unwrap();
        assert!(fmtp.starts_with("packetization-mode=1;profile-level-id=42C01E;"));
        match depacketizer(&p[0]).parameters() {
            Some(ParametersRef::Video(v)) => {
                assert_eq!(
                    v.codec_params(),
                    &VideoParametersCodec::H264 {
                        sps: hex(H264_SPS),
                        pps: hex(H264_PPS)
                    }
                );
                assert_eq!(v.pixel_dimensions(), (640, 360));
            }
            other => panic!("{other:?}"),
        }
        let m0 = &sdp.medias[0];
        assert_eq!(
            m0.get_first_attribute_value("framerate"),
            Some(Some("29.97"))
        );
        assert_eq!(
            m0.get_first_attribute_value("x-dimensions"),
            Some(Some("640,360"))
        );

        // AAC.
        assert_eq!(
            (p[1].encoding.as_str(), p[1].clock),
            ("mpeg4-generic", 48_000)
        );
        match depacketizer(&p[1]).parameters() {
            Some(ParametersRef::Audio(a)) => {
                assert_eq!(a.extra_data(), &[0x11, 0x90]);
                assert_eq!(a.channels().get(), 2);
                assert_eq!(a.clock_rate(), 48_000);
                assert_eq!(a.rfc6381_codec(), Some("mp4a.40.2"));
            }
            other => panic!("{other:?}"),
        }

        // PCMA, static payload type 8.
        assert_eq!(p[2].pt, 8);
        assert_eq!(
            (p[2].encoding.as_str(), p[2].clock, p[2].channels),
            ("pcma", 8000, None)
        );
        assert!(p[2].fmtp.is_none());
        assert!(matches!(
            depacketizer(&p[2]).parameters(),
            Some(ParametersRef::Audio(_))
        ));

        // H.265.
        match depacketizer(&p[3]).parameters() {
            Some(ParametersRef::Video(v)) => {
                assert_eq!(
                    v.codec_params(),
                    &VideoParametersCodec::H265 {
                        vps: hex(H265_VPS),
                        sps: hex(H265_SPS),
                        pps: hex(H265_PPS)
                    }
                );
                assert_eq!(v.pixel_dimensions(), (640, 360));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            sdp.medias[3].get_first_attribute_value("framerate"),
            Some(Some("25"))
        );

        // PCMU stereo 16 kHz: dynamic type, channels in rtpmap.
        assert_eq!(p[4].pt, 100);
        assert_eq!(
            (p[4].encoding.as_str(), p[4].clock, p[4].channels),
            ("pcmu", 16000, NonZeroU16::new(2))
        );
        match depacketizer(&p[4]).parameters() {
            Some(ParametersRef::Audio(a)) => assert_eq!(a.channels().get(), 2),
            other => panic!("{other:?}"),
        }

        // Opus (retina has no Opus depacketizer): RFC 7587 §7 rtpmap.
        assert_eq!(
            (p[5].encoding.as_str(), p[5].clock, p[5].channels),
            ("opus", 48000, NonZeroU16::new(2))
        );
        assert_eq!(p[5].fmtp.as_deref(), Some("sprop-stereo=1"));
    }

    #[test]
    fn origin_and_edge_cases() {
        let t = |sps: Bytes| {
            vec![track(
                Codec::H264 {
                    sps,
                    pps: hex(H264_PPS),
                },
                90_000,
            )]
        };
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let a = describe("cam1", ip, &t(hex(H264_SPS)));
        let b = describe("cam1", ip, &t(Bytes::new()));
        let (oa, ob) = (
            sdp_types::Session::parse(a.as_bytes()).unwrap().origin,
            sdp_types::Session::parse(b.as_bytes()).unwrap().origin,
        );
        assert_eq!(oa.sess_id, ob.sess_id, "same session");
        assert_ne!(
            oa.sess_version, ob.sess_version,
            "new parameters, new version"
        );
        // No SPS: no profile-level-id, only the PPS in sprop-parameter-sets.
        assert!(
            b.contains("a=fmtp:96 packetization-mode=1;sprop-parameter-sets=aMuMsg==\r\n"),
            "{b}"
        );

        // IPv6, empty name, no tracks, a name that tries to inject a line.
        let v6 = describe("", "2001:db8::1".parse().unwrap(), &[]);
        let s = sdp_types::Session::parse(v6.as_bytes()).unwrap();
        assert_eq!(s.origin.addrtype, sdp_types::AddrType::Ip6);
        assert_eq!(s.connection.unwrap().connection_address, "::");
        assert!(v6.contains("\r\ns= \r\n"));
        assert!(s.medias.is_empty());
        let evil = describe("x\r\na=evil:1", ip, &[]);
        assert!(!evil.contains("\r\na=evil"));
    }
}
