//! CMAF/fMP4 boxes (ISO/IEC 14496-12, ISO/IEC 23000-19) built with
//! mp4-atom: the init segment (`ftyp` + `moov`) and one fragment
//! (`moof` + `mdat`) per LL-HLS part.

use bytes::{BufMut, Bytes, BytesMut};
use mp4_atom as mp4;
use mp4_atom::Encode;

use super::segmenter::UnsupportedTrack;
use crate::bus::{Codec, MediaKind, Track};
use crate::codec::{H265_NAL_PPS, H265_NAL_SPS, H265_NAL_VPS, OPUS_RFC6381};

/// `sample_flags` (ISO/IEC 14496-12 §8.8.3.1) of a sync sample:
/// `sample_depends_on = 2` (depends on no other sample).
pub const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// `sample_flags` of a non-sync sample: `sample_depends_on = 1` and
/// `sample_is_non_sync_sample = 1`.
pub const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// Why boxes could not be written. Only unexpected sizes reach this: the
/// inputs are validated when a track is described.
#[derive(Debug, thiserror::Error)]
pub enum Fmp4Error {
    #[error("mp4 encoding failed: {0}")]
    Encode(#[from] mp4::Error),
    #[error("{0} does not fit its 32-bit field")]
    TooLarge(&'static str),
}

/// What the fMP4 writer and the playlists need to know about one track,
/// derived once from its [`Track`] (and again when its parameters change).
#[derive(Debug, Clone)]
pub struct TrackDescription {
    /// The `stsd` sample entry: `avc1`+`avcC`, `hvc1`+`hvcC`, `mp4a`+`esds` or `Opus`+`dOps`.
    pub sample_entry: mp4::Codec,
    /// RFC 6381 codec string for `CODECS=` (e.g. `avc1.64001f`, `mp4a.40.2`, `opus`).
    pub codec_string: String,
    pub kind: MediaKind,
    /// `mdhd` timescale: the track's RTP clock rate (Hz).
    pub timescale: u32,
    /// Display size in pixels (video), from [`Track::dimensions`].
    pub dimensions: Option<(u16, u16)>,
}

fn bad(codec: &'static str, reason: impl Into<String>) -> UnsupportedTrack {
    UnsupportedTrack::BadParameters {
        codec,
        reason: reason.into(),
    }
}

/// Describes `track` for fMP4, or says why it cannot be carried in fMP4 for
/// browsers.
///
/// Errors: G.711, MJPEG, Opus with more than two channels, a zero clock rate,
/// missing or unparseable parameter sets / AudioSpecificConfig, dimensions
/// above 65535.
pub fn describe(track: &Track) -> Result<TrackDescription, UnsupportedTrack> {
    if track.clock_rate == 0 {
        return Err(UnsupportedTrack::NoClockRate);
    }
    let dimensions = match track.dimensions {
        Some((w, h)) => Some((
            u16::try_from(w).map_err(|_| bad(track.codec.name(), "width above 65535"))?,
            u16::try_from(h).map_err(|_| bad(track.codec.name(), "height above 65535"))?,
        )),
        None => None,
    };
    let (w, h) = dimensions.unwrap_or((0, 0));
    let visual = mp4::Visual {
        data_reference_index: 1,
        width: w,
        height: h,
        ..Default::default()
    };
    // The sample entries' codec facts come from the track's summary, read
    // from its parameter sets when the track was made.
    let (sample_entry, codec_string): (mp4::Codec, String) = match &track.codec {
        Codec::H264 { sps, pps } => {
            let info = track
                .h264()
                .ok_or_else(|| bad("H.264", "the SPS does not parse"))?;
            if pps.is_empty() {
                return Err(bad("H.264", "no PPS"));
            }
            // ISO/IEC 14496-15 §5.3.3.1.2: the high profiles carry the
            // chroma format and bit depths after the parameter sets.
            let ext = info.avcc_ext().map(|c| mp4::AvccExt {
                chroma_format: c.format_idc,
                bit_depth_luma: c.bit_depth_luma,
                bit_depth_chroma: c.bit_depth_chroma,
                sequence_parameter_sets_ext: Vec::new(),
            });
            let avcc = mp4::Avcc {
                configuration_version: 1,
                avc_profile_indication: info.profile_idc,
                profile_compatibility: info.constraint_flags,
                avc_level_indication: info.level_idc,
                length_size: 4,
                sequence_parameter_sets: vec![sps.to_vec()],
                picture_parameter_sets: vec![pps.to_vec()],
                ext,
            };
            let entry = mp4::Avc1 {
                visual,
                avcc,
                ..Default::default()
            };
            (entry.into(), info.rfc6381())
        }
        Codec::H265 { vps, sps, pps } => {
            let info = track
                .h265()
                .ok_or_else(|| bad("H.265", "the SPS does not parse"))?;
            if vps.is_empty() || pps.is_empty() {
                return Err(bad("H.265", "no VPS or PPS"));
            }
            // ISO/IEC 14496-15 §8.3.3.1; hvc1 keeps every parameter set in
            // here, hence array_completeness = 1.
            let array = |nal_unit_type: u8, nal: &[u8]| mp4::HvcCArray {
                completeness: true,
                nal_unit_type,
                nalus: vec![nal.to_vec()],
            };
            let hvcc = mp4::Hvcc {
                configuration_version: 1,
                general_profile_space: info.profile_space,
                general_tier_flag: info.tier_flag,
                general_profile_idc: info.profile_idc,
                general_profile_compatibility_flags: info.compatibility_flags,
                general_constraint_indicator_flags: info.constraint_flags,
                general_level_idc: info.level_idc,
                min_spatial_segmentation_idc: 0,
                parallelism_type: 0,
                chroma_format_idc: info.chroma.format_idc,
                bit_depth_luma_minus8: info.chroma.bit_depth_luma - 8,
                bit_depth_chroma_minus8: info.chroma.bit_depth_chroma - 8,
                avg_frame_rate: 0,
                constant_frame_rate: 0,
                num_temporal_layers: info.num_temporal_layers,
                temporal_id_nested: info.temporal_id_nested,
                length_size_minus_one: 3,
                arrays: vec![
                    array(H265_NAL_VPS, vps),
                    array(H265_NAL_SPS, sps),
                    array(H265_NAL_PPS, pps),
                ],
            };
            let entry = mp4::Hvc1 {
                visual,
                hvcc,
                ..Default::default()
            };
            (entry.into(), info.rfc6381())
        }
        Codec::Aac { config, channels } => {
            let aac = track
                .aac()
                .ok_or_else(|| bad("AAC", "the AudioSpecificConfig does not parse"))?;
            let entry = mp4::Mp4a {
                audio: audio_entry(*channels, track.clock_rate),
                esds: mp4::Esds {
                    es_desc: mp4::esds::EsDescriptor {
                        // ISO/IEC 14496-14 §3.1.2: ES_ID is 0 in stored files.
                        es_id: 0,
                        dec_config: mp4::esds::DecoderConfig {
                            object_type_indication: 0x40, // MPEG-4 Audio
                            stream_type: 0x05,            // AudioStream
                            up_stream: 0,
                            buffer_size_db: Default::default(),
                            max_bitrate: 0,
                            avg_bitrate: 0,
                            dec_specific: Some(mp4::esds::DecoderSpecific {
                                // Encode writes `raw` verbatim when it is set;
                                // the parsed fields are only a view of it.
                                profile: aac.object_type,
                                freq_index: 0,
                                chan_conf: 0,
                                raw: config.to_vec(),
                            }),
                        },
                        ..Default::default()
                    },
                },
                btrt: None,
                taic: None,
            };
            (entry.into(), aac.rfc6381())
        }
        Codec::Opus { channels } => {
            if track.clock_rate != 48_000 {
                return Err(bad("Opus", "RTP clock rate is not 48000"));
            }
            let count = match *channels {
                1 | 2 => *channels as u8,
                n => return Err(UnsupportedTrack::OpusChannels { channels: n }),
            };
            // Opus in ISOBMFF (opus-codec.org/docs/opus_in_isobmff.html §4.3):
            // family 0 covers mono and stereo without a mapping table. RTP
            // carries no pre-skip, and a live join has nothing to trim.
            let entry = mp4::Opus {
                audio: audio_entry(u16::from(count), 48_000),
                dops: mp4::Dops {
                    output_channel_count: count,
                    pre_skip: 0,
                    input_sample_rate: 48_000,
                    output_gain: 0,
                    channel_mapping: None,
                },
                btrt: None,
            };
            (entry.into(), OPUS_RFC6381.to_owned())
        }
        Codec::Pcma { .. } => return Err(UnsupportedTrack::G711 { codec: "PCMA" }),
        Codec::Pcmu { .. } => return Err(UnsupportedTrack::G711 { codec: "PCMU" }),
        Codec::Jpeg => return Err(UnsupportedTrack::Mjpeg),
    };
    Ok(TrackDescription {
        sample_entry,
        codec_string,
        kind: track.kind(),
        timescale: track.clock_rate,
        dimensions: if track.kind() == MediaKind::Video {
            dimensions
        } else {
            None
        },
    })
}

/// An `AudioSampleEntry` (ISO/IEC 14496-12 §12.2.3). The 16.16 sample rate
/// cannot hold rates above 65535 Hz; those are written as 0 and the decoder
/// takes the rate from the codec configuration.
fn audio_entry(channels: u16, rate: u32) -> mp4::Audio {
    mp4::Audio {
        data_reference_index: 1,
        channel_count: if channels == 0 { 2 } else { channels },
        sample_size: 16,
        sample_rate: mp4::FixedPoint::new(u16::try_from(rate).unwrap_or(0), 0),
    }
}

/// Writes an init segment: `ftyp` (major `iso6`, compatible `iso6`, `cmfc`)
/// and a `moov` with one `trak` per track and `mvex`/`trex` for each
/// (ISO/IEC 23000-19 §7.3.1). `tracks` pairs each description with its
/// `track_ID` (1-based).
pub fn init_segment(tracks: &[(u32, &TrackDescription)]) -> Result<Bytes, Fmp4Error> {
    let ftyp = mp4::Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into()],
    };
    let next_track_id = tracks.iter().map(|(id, _)| *id).max().unwrap_or(0) + 1;
    let moov = mp4::Moov {
        mvhd: mp4::Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id,
            ..Default::default()
        },
        mvex: Some(mp4::Mvex {
            mehd: None,
            trex: tracks
                .iter()
                .map(|(id, _)| mp4::Trex {
                    track_id: *id,
                    default_sample_description_index: 1,
                    ..Default::default()
                })
                .collect(),
        }),
        trak: tracks.iter().map(|(id, d)| trak(*id, d)).collect(),
        ..Default::default()
    };
    let mut buf = Vec::new();
    ftyp.encode(&mut buf)?;
    moov.encode(&mut buf)?;
    Ok(Bytes::from(buf))
}

fn trak(track_id: u32, d: &TrackDescription) -> mp4::Trak {
    let video = d.kind == MediaKind::Video;
    let (w, h) = d.dimensions.unwrap_or((0, 0));
    mp4::Trak {
        tkhd: mp4::Tkhd {
            track_id,
            enabled: true,
            in_movie: true,
            // §8.3.2.3: 0x0100 (full volume) for audio tracks, 0 otherwise.
            volume: if video { 0.into() } else { 1.into() },
            width: w.into(),
            height: h.into(),
            ..Default::default()
        },
        mdia: mp4::Mdia {
            mdhd: mp4::Mdhd {
                timescale: d.timescale,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: mp4::Hdlr {
                handler: if video { b"vide" } else { b"soun" }.into(),
                name: if video {
                    "VideoHandler"
                } else {
                    "SoundHandler"
                }
                .into(),
            },
            minf: mp4::Minf {
                vmhd: video.then(mp4::Vmhd::default),
                smhd: (!video).then(mp4::Smhd::default),
                dinf: mp4::Dinf {
                    dref: mp4::Dref {
                        entries: vec![mp4::Url::default().into()],
                    },
                },
                stbl: mp4::Stbl {
                    stsd: mp4::Stsd {
                        codecs: vec![d.sample_entry.clone()],
                    },
                    // Empty tables: every sample lives in fragments (§8.8.1).
                    stco: Some(mp4::Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

/// One sample of a fragment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// In the track's timescale: the next sample's decode time minus this one's.
    pub duration: u32,
    /// Composition time offset `pts - dts`, signed (trun version 1).
    pub cts: i32,
    /// A sync sample (video keyframe, or any audio frame).
    pub sync: bool,
    pub data: Bytes,
}

/// The samples of one track in a fragment.
#[derive(Debug, Clone, Copy)]
pub struct TrackRun<'a> {
    pub track_id: u32,
    /// `tfdt` baseMediaDecodeTime of the first sample (ISO/IEC 14496-12 §8.8.12).
    pub base_media_decode_time: u64,
    pub samples: &'a [Sample],
}

/// Writes one fragment: `moof` (`mfhd` with `sequence_number`, then one
/// `traf` per run with `tfhd` default-base-is-moof, `tfdt`, and a `trun`
/// carrying data offset, per-sample duration, size, flags and signed
/// composition offsets) followed by one `mdat` holding the runs' sample data
/// in order (ISO/IEC 14496-12 §8.8.4–§8.8.8, §8.8.12; ISO/IEC 23000-19 §7.3.2.3).
///
/// Errors: an `mdat` or data offset beyond 32 bits (over 4 GiB of samples).
pub fn fragment(sequence_number: u32, runs: &[TrackRun<'_>]) -> Result<Bytes, Fmp4Error> {
    let payload: usize = runs
        .iter()
        .flat_map(|r| r.samples.iter())
        .map(|s| s.data.len())
        .sum();
    let mut traf = Vec::with_capacity(runs.len());
    for r in runs {
        let mut entries = Vec::with_capacity(r.samples.len());
        for s in r.samples {
            entries.push(mp4::TrunEntry {
                duration: Some(s.duration),
                size: Some(
                    u32::try_from(s.data.len()).map_err(|_| Fmp4Error::TooLarge("sample size"))?,
                ),
                flags: Some(if s.sync {
                    SYNC_SAMPLE_FLAGS
                } else {
                    NON_SYNC_SAMPLE_FLAGS
                }),
                cts: Some(i64::from(s.cts)),
            });
        }
        traf.push(mp4::Traf {
            tfhd: mp4::Tfhd {
                track_id: r.track_id,
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(mp4::Tfdt {
                base_media_decode_time: r.base_media_decode_time,
            }),
            trun: vec![mp4::Trun {
                // Placeholder; the real offsets need the moof size.
                data_offset: Some(0),
                samples: mp4::TrunSamples::Explicit(entries),
            }],
            ..Default::default()
        });
    }
    let mut moof = mp4::Moof {
        mfhd: mp4::Mfhd { sequence_number },
        traf,
    };
    // The offsets are fixed-width fields, so the moof size does not depend
    // on their values: measure once, then fill them in.
    let mut probe = Vec::new();
    moof.encode(&mut probe)?;
    const MDAT_HEADER: usize = 8;
    let mut offset = probe.len() + MDAT_HEADER;
    for (traf, run) in moof.traf.iter_mut().zip(runs) {
        // Each traf was built above with exactly one trun.
        traf.trun[0].data_offset =
            Some(i32::try_from(offset).map_err(|_| Fmp4Error::TooLarge("trun data offset"))?);
        offset += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    let mdat_size =
        u32::try_from(MDAT_HEADER + payload).map_err(|_| Fmp4Error::TooLarge("mdat size"))?;

    let mut out = BytesMut::with_capacity(probe.len() + MDAT_HEADER + payload);
    let mut head = Vec::with_capacity(probe.len());
    moof.encode(&mut head)?;
    debug_assert_eq!(head.len(), probe.len(), "moof size changed with offsets");
    out.put_slice(&head);
    // The mdat header is written by hand so the samples are copied once,
    // straight from the frames' buffers (mp4::Mdat would need a Vec first).
    out.put_u32(mdat_size);
    out.put_slice(b"mdat");
    for s in runs.iter().flat_map(|r| r.samples.iter()) {
        out.put_slice(&s.data);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmaf::testutil;
    use mp4_atom::{Any, Decode};

    fn decode_all(mut data: &[u8]) -> Vec<Any> {
        let mut out = Vec::new();
        while !data.is_empty() {
            out.push(Any::decode(&mut data).expect("valid box"));
        }
        out
    }

    #[test]
    fn init_segment_h264_aac_round_trips() {
        let fx = testutil::h264_fixture();
        let v = describe(&testutil::h264_track(&fx)).expect("H.264 fixture is supported");
        let a = describe(&testutil::aac_track()).expect("AAC is supported");
        assert_eq!(v.codec_string, "avc1.64001e");
        assert_eq!(a.codec_string, "mp4a.40.2");
        let init = init_segment(&[(1, &v), (2, &a)]).expect("init encodes");
        let boxes = decode_all(&init);
        assert_eq!(boxes.len(), 2);
        let Any::Ftyp(ftyp) = &boxes[0] else {
            panic!("first box is {:?}", boxes[0]);
        };
        assert_eq!(ftyp.major_brand, b"iso6".into());
        assert!(ftyp.compatible_brands.contains(&b"cmfc".into()));
        let Any::Moov(moov) = &boxes[1] else {
            panic!("second box is not moov");
        };
        assert_eq!(moov.trak.len(), 2);
        assert_eq!(moov.mvhd.next_track_id, 3);
        let mvex = moov.mvex.as_ref().expect("mvex present");
        assert_eq!(mvex.trex.len(), 2);
        let vt = &moov.trak[0];
        assert_eq!(vt.tkhd.track_id, 1);
        assert_eq!(vt.tkhd.width, 640.into());
        assert_eq!(vt.mdia.mdhd.timescale, 90_000);
        assert_eq!(vt.mdia.hdlr.handler, b"vide".into());
        let mp4::Codec::Avc1(avc1) = &vt.mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not avc1");
        };
        assert_eq!(avc1.visual.width, 640);
        assert_eq!(avc1.avcc.sequence_parameter_sets, vec![fx.sps.clone()]);
        assert_eq!(avc1.avcc.picture_parameter_sets, vec![fx.pps.clone()]);
        assert_eq!(avc1.avcc.avc_profile_indication, 100);
        assert!(
            avc1.avcc.ext.is_some(),
            "High profile carries the avcC extension"
        );
        let at = &moov.trak[1];
        assert_eq!(at.mdia.mdhd.timescale, 48_000);
        assert_eq!(at.mdia.hdlr.handler, b"soun".into());
        let mp4::Codec::Mp4a(mp4a) = &at.mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not mp4a");
        };
        assert_eq!(mp4a.audio.channel_count, 2);
        let dsi = mp4a.esds.es_desc.dec_config.dec_specific.as_ref();
        assert_eq!(dsi.map(|d| d.raw.as_slice()), Some(&[0x11, 0x90][..]));
    }

    #[test]
    fn init_segment_h265_opus() {
        let fx = testutil::h265_fixture();
        let v = describe(&testutil::h265_track(&fx)).expect("H.265 fixture is supported");
        let a = describe(&testutil::opus_track()).expect("Opus stereo is supported");
        assert_eq!(a.codec_string, "opus");
        let init = init_segment(&[(1, &v), (2, &a)]).expect("init encodes");
        let boxes = decode_all(&init);
        let Any::Moov(moov) = &boxes[1] else {
            panic!("no moov");
        };
        let mp4::Codec::Hvc1(hvc1) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not hvc1");
        };
        let types: Vec<u8> = hvc1.hvcc.arrays.iter().map(|a| a.nal_unit_type).collect();
        assert_eq!(types, vec![32, 33, 34]);
        assert_eq!(hvc1.hvcc.general_profile_idc, 1);
        assert_eq!(hvc1.hvcc.length_size_minus_one, 3);
        let mp4::Codec::Opus(opus) = &moov.trak[1].mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not Opus");
        };
        assert_eq!(opus.dops.output_channel_count, 2);
        assert_eq!(opus.dops.input_sample_rate, 48_000);
    }

    #[test]
    fn unsupported_tracks_say_why() {
        let err = describe(&testutil::pcma_track()).expect_err("G.711 is refused");
        assert!(err.to_string().contains("G.711"), "{err}");
        let mut t = (*testutil::opus_track()).clone();
        t.codec = Codec::Opus { channels: 6 };
        assert_eq!(
            describe(&t).expect_err("6-channel Opus is refused"),
            UnsupportedTrack::OpusChannels { channels: 6 }
        );
        let t = Track::new(
            Codec::Aac {
                config: Bytes::new(),
                channels: 2,
            },
            48_000,
        );
        assert!(matches!(
            describe(&t),
            Err(UnsupportedTrack::BadParameters { codec: "AAC", .. })
        ));
        let mut t = (*testutil::aac_track()).clone();
        t.clock_rate = 0;
        assert_eq!(describe(&t).unwrap_err(), UnsupportedTrack::NoClockRate);
        let t = Track::new(
            Codec::H264 {
                sps: Bytes::from_static(&[0x67, 0x64]),
                pps: Bytes::from_static(&[0x68]),
            },
            90_000,
        );
        assert!(matches!(
            describe(&t),
            Err(UnsupportedTrack::BadParameters { codec: "H.264", .. })
        ));
    }

    #[test]
    fn fragment_offsets_point_at_the_samples() {
        let v = [
            Sample {
                duration: 3600,
                cts: 7200,
                sync: true,
                data: Bytes::from_static(b"key"),
            },
            Sample {
                duration: 3600,
                cts: -3600,
                sync: false,
                data: Bytes::from_static(b"delta"),
            },
        ];
        let a = [Sample {
            duration: 1024,
            cts: 0,
            sync: true,
            data: Bytes::from_static(b"aac!"),
        }];
        let frag = fragment(
            7,
            &[
                TrackRun {
                    track_id: 1,
                    base_media_decode_time: 90_000,
                    samples: &v,
                },
                TrackRun {
                    track_id: 2,
                    base_media_decode_time: 48_000,
                    samples: &a,
                },
            ],
        )
        .expect("fragment encodes");
        let boxes = decode_all(&frag);
        let (Any::Moof(moof), Any::Mdat(mdat)) = (&boxes[0], &boxes[1]) else {
            panic!("not moof + mdat");
        };
        assert_eq!(mdat.data, b"keydeltaaac!");
        assert_eq!(moof.mfhd.sequence_number, 7);
        for traf in &moof.traf {
            assert!(traf.tfhd.default_base_is_moof);
            let off = traf.trun[0].data_offset.expect("data offset set") as usize;
            let first = traf.trun[0].samples.get(0).expect("one sample at least");
            let size = first.size.expect("size set") as usize;
            let expect: &[u8] = if traf.tfhd.track_id == 1 {
                b"key"
            } else {
                b"aac!"
            };
            assert_eq!(&frag[off..off + size], expect);
        }
        let entries: Vec<_> = moof.traf[0].trun[0].samples.iter().collect();
        assert_eq!(entries[0].flags, Some(SYNC_SAMPLE_FLAGS));
        assert_eq!(entries[1].flags, Some(NON_SYNC_SAMPLE_FLAGS));
        assert_eq!(entries[1].cts, Some(-3600));
        assert_eq!(
            moof.traf[1].tfdt.as_ref().map(|t| t.base_media_decode_time),
            Some(48_000)
        );
    }
}
