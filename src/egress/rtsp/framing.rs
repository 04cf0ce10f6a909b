//! Where the next message in an RTSP connection's input ends, found once:
//! a request (or response) is handed to the parser only when its header
//! block and body are complete, and interleaved binary data
//! (RFC 2326 §10.12: `$`, channel, 16-bit length) is stepped over by its
//! length. Pure: the shell keeps the input buffer and asks [`Framer::next`]
//! after each read; a request sent one byte per packet costs one scan of
//! each byte, not one parse per byte.

/// Largest header block (request line and headers, blank line included),
/// in bytes.
pub const MAX_HEADER: usize = 64 * 1024;
/// Largest body (`Content-Length`), in bytes. We take bodies only for
/// GET_PARAMETER/SET_PARAMETER keepalives and ANNOUNCE SDPs.
pub const MAX_BODY: usize = 64 * 1024;

/// What starts at the beginning of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Not complete yet: read more.
    Incomplete,
    /// `skip` bytes of line breaks between messages (clients' keepalives),
    /// to drop.
    Blank { skip: usize },
    /// An interleaved frame of `len` bytes (4 header bytes included) on
    /// `channel`.
    Interleaved { channel: u8, len: usize },
    /// A whole message of `len` bytes: header block and body.
    Message { len: usize },
    /// The header block is over [`MAX_HEADER`] without ending: RTSP 400
    /// (no status fits better in RTSP/1.0), then close.
    HeaderTooLarge,
    /// `Content-Length` over [`MAX_BODY`]: RTSP 413, then close.
    BodyTooLarge,
    /// `Content-Length` not a plain decimal number, or given twice with
    /// different values: RTSP 400, then close (the message's end is
    /// unknown, so nothing after it can be read).
    BadContentLength,
}

/// The scan state of one connection's input.
#[derive(Debug, Default)]
pub struct Framer {
    /// How far the current message's bytes were searched for the blank
    /// line already, so a slowly sent header is scanned once.
    scanned: usize,
}

impl Framer {
    /// What the input `buf` starts with. After `Blank`, `Interleaved` or
    /// `Message`, the caller removes `len`/`skip` bytes from the front
    /// before asking again; after `Incomplete`, it appends what it reads.
    pub fn next(&mut self, buf: &[u8]) -> Next {
        let Some(&first) = buf.first() else {
            self.scanned = 0;
            return Next::Incomplete;
        };
        if first == b'$' {
            self.scanned = 0;
            let (Some(&channel), Some(&hi), Some(&lo)) = (buf.get(1), buf.get(2), buf.get(3))
            else {
                return Next::Incomplete;
            };
            let len = 4 + usize::from(u16::from_be_bytes([hi, lo]));
            return if buf.len() >= len {
                Next::Interleaved { channel, len }
            } else {
                Next::Incomplete
            };
        }
        if first == b'\r' || first == b'\n' {
            self.scanned = 0;
            let skip = buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            return Next::Blank { skip };
        }
        let Some(header_len) = self.header_end(buf) else {
            return if buf.len() > MAX_HEADER {
                Next::HeaderTooLarge
            } else {
                Next::Incomplete
            };
        };
        if header_len > MAX_HEADER {
            return Next::HeaderTooLarge;
        }
        let body = match content_length(buf.get(..header_len).unwrap_or_default()) {
            Ok(n) => n,
            Err(()) => return Next::BadContentLength,
        };
        if body > MAX_BODY {
            return Next::BodyTooLarge;
        }
        let len = header_len + body;
        if buf.len() < len {
            return Next::Incomplete;
        }
        self.scanned = 0;
        Next::Message { len }
    }

    /// The length of the header block through its blank line (CRLF CRLF,
    /// or bare LF LF as some clients send), searching only bytes not
    /// searched before (less 3, as the terminator may straddle reads).
    fn header_end(&mut self, buf: &[u8]) -> Option<usize> {
        let from = self.scanned.saturating_sub(3).min(buf.len());
        let window = buf.get(..buf.len().min(MAX_HEADER + 4))?;
        let mut i = from;
        while let Some(&b) = window.get(i) {
            if b == b'\n' {
                if window.get(i + 1) == Some(&b'\n') {
                    return Some(i + 2);
                }
                if window.get(i + 1) == Some(&b'\r') && window.get(i + 2) == Some(&b'\n') {
                    return Some(i + 3);
                }
            }
            i += 1;
        }
        self.scanned = window.len();
        None
    }
}

/// The `Content-Length` of a header block: 0 when absent; `Err` when not a
/// decimal number or repeated with another value. Values too large for
/// `usize` saturate (and are refused as too large).
fn content_length(header: &[u8]) -> Result<usize, ()> {
    let mut found: Option<usize> = None;
    // The request line is skipped: the first line is never a header.
    for line in header.split(|b| *b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        if !name.trim_ascii().eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        let digits = value.get(1..).unwrap_or_default().trim_ascii();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n = digits.iter().fold(0usize, |n, d| {
            n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
        });
        match found {
            Some(m) if m != n => return Err(()),
            _ => found = Some(n),
        }
    }
    Ok(found.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(buf: &[u8]) -> Next {
        Framer::default().next(buf)
    }

    #[test]
    fn requests_end_at_the_blank_line_plus_body() {
        let req = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n";
        assert_eq!(next(req), Next::Message { len: req.len() });
        let with_body = b"SET_PARAMETER * RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(next(&with_body[..with_body.len() - 1]), Next::Incomplete);
        assert_eq!(
            next(with_body),
            Next::Message {
                len: with_body.len()
            }
        );
        let lf = b"OPTIONS * RTSP/1.0\nCSeq: 1\n\nOPTIONS";
        assert_eq!(next(lf), Next::Message { len: 28 });
    }

    #[test]
    fn interleaved_frames_are_stepped_over_by_length() {
        assert_eq!(next(b"$\x01\x00"), Next::Incomplete);
        assert_eq!(next(b"$\x01\x00\x02a"), Next::Incomplete);
        assert_eq!(
            next(b"$\x01\x00\x02abOPTIONS"),
            Next::Interleaved { channel: 1, len: 6 }
        );
        assert_eq!(next(b"\r\n\r\nOPT"), Next::Blank { skip: 4 });
    }

    #[test]
    fn content_length_is_checked() {
        for bad in ["-1", "1.5", "", "0x10", "1 2"] {
            let req = format!("ANNOUNCE * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(next(req.as_bytes()), Next::BadContentLength, "{bad:?}");
        }
        let twice = b"A * RTSP/1.0\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\nab";
        assert_eq!(next(twice), Next::BadContentLength);
        let huge = b"A * RTSP/1.0\r\nContent-Length: 2147483648\r\n\r\n";
        assert_eq!(next(huge), Next::BodyTooLarge);
        let overflow = b"A * RTSP/1.0\r\nContent-Length: 99999999999999999999999999\r\n\r\n";
        assert_eq!(next(overflow), Next::BodyTooLarge);
    }

    #[test]
    fn an_endless_header_is_refused_at_the_cap() {
        let mut buf = b"OPTIONS * RTSP/1.0\r\n".to_vec();
        buf.resize(MAX_HEADER, b'a');
        assert_eq!(next(&buf), Next::Incomplete);
        buf.push(b'a');
        assert_eq!(next(&buf), Next::HeaderTooLarge);
    }

    #[test]
    fn a_header_sent_byte_by_byte_is_scanned_once() {
        let req = b"DESCRIBE rtsp://h/cam RTSP/1.0\r\nCSeq: 2\r\n\r\n";
        let mut f = Framer::default();
        for n in 1..req.len() {
            assert_eq!(f.next(&req[..n]), Next::Incomplete, "{n}");
            // Only the last few bytes are searched again.
            assert_eq!(f.scanned, n);
        }
        assert_eq!(f.next(req), Next::Message { len: req.len() });
        assert_eq!(f.scanned, 0);
    }
}
