//! Ports on 127.0.0.1 that were free a moment ago (tests and benchmarks run
//! gateways side by side, so nothing uses a default port).

use std::net::{Ipv4Addr, TcpListener, UdpSocket};

/// A TCP port on `ip` that was free a moment ago.
pub fn free_port_on(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("bind {ip}:0: {e}"))
        .port()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// An even/odd pair of UDP ports (RTP, RTCP) on 127.0.0.1 that were both free
/// a moment ago.
pub fn free_udp_port_pair() -> (u16, u16) {
    for _ in 0..100 {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
        let p = a.local_addr().unwrap().port();
        if !p.is_multiple_of(2) || p == u16::MAX {
            continue;
        }
        if UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return (p, p + 1);
        }
    }
    panic!("no free even/odd UDP port pair on 127.0.0.1 after 100 attempts");
}

/// A port on 127.0.0.1 that was free for both TCP and UDP a moment ago
/// (the WebRTC port takes both).
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..100 {
        let p = free_port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no port free for both TCP and UDP on 127.0.0.1 after 100 attempts");
}
