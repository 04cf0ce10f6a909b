//! UDP generic segmentation offload (GSO): several datagrams of one size
//! (the last may be shorter) to one destination in a single `sendmsg`, the
//! kernel cutting them apart. A frame's RTP packets are mostly fragments of
//! the same size, so a frame costs a few system calls instead of one per
//! packet. quinn-udp sends them and reports how many segments the kernel
//! takes ([`quinn_udp::UdpSocketState::max_gso_segments`], 1 without GSO).

/// Most bytes in one GSO send: all segments together must fit one IP
/// packet's 64 KiB length (a larger send fails with EINVAL, and quinn-udp
/// then turns GSO off for good).
pub const MAX_GSO_BYTES: usize = 60_000;

/// The end (exclusive) of the run of packets starting at `start` (of `n`)
/// that one GSO send can carry: packets of the first one's length, then at
/// most one shorter, all with `joins(i)` true (same destination), at most
/// `max_segments` of them and [`MAX_GSO_BYTES`] in all. At least
/// `start + 1`.
pub fn gso_run(
    start: usize,
    n: usize,
    max_segments: usize,
    len: impl Fn(usize) -> usize,
    joins: impl Fn(usize) -> bool,
) -> usize {
    let size = len(start);
    let mut end = start + 1;
    let mut total = size;
    if size == 0 {
        return end;
    }
    while end < n && end - start < max_segments && joins(end) {
        let l = len(end);
        if l > size || l == 0 || total + l > MAX_GSO_BYTES {
            break;
        }
        total += l;
        end += 1;
        if l < size {
            break; // a shorter segment ends the run
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lens: &[usize], start: usize, max: usize) -> usize {
        gso_run(start, lens.len(), max, |i| lens[i], |_| true)
    }

    #[test]
    fn equal_sizes_then_one_shorter() {
        let lens = [1400, 1400, 1400, 900, 1400];
        assert_eq!(run(&lens, 0, 64), 4);
        assert_eq!(run(&lens, 4, 64), 5);
    }

    #[test]
    fn a_longer_packet_or_another_destination_ends_the_run() {
        let lens = [20, 1400, 1400];
        assert_eq!(run(&lens, 0, 64), 1);
        assert_eq!(run(&lens, 1, 64), 3);
        let l = [1400, 1400, 1400];
        assert_eq!(gso_run(0, 3, 64, |i| l[i], |i| i != 2), 2);
    }

    #[test]
    fn bounded_by_segments_and_bytes() {
        let lens = [1400; 100];
        assert_eq!(run(&lens, 0, 1), 1);
        assert_eq!(run(&lens, 0, 10), 10);
        assert_eq!(run(&lens, 0, 64), MAX_GSO_BYTES / 1400);
    }
}
