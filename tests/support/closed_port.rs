//! A loopback port that refuses connections and that no other test can
//! take: bound (not listening) while held, and outside the kernel's
//! ephemeral range, where `bind(127.0.0.1:0)` and outgoing connections
//! take their ports. A port merely "free a moment ago" may be given to a
//! test running alongside, which then answers instead of refusing; and a
//! server restarted on an ephemeral port may find it taken.
#![allow(dead_code)]

use std::net::SocketAddr;

pub struct ClosedPort {
    socket: tokio::net::TcpSocket,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        // Below the ephemeral range (32768 by default).
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        let mut tried = Vec::new();
        for _ in 0..50 {
            let port = fastrand::u16(10_000..range.max(10_001));
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
            match socket.bind(SocketAddr::from(([127, 0, 0, 1], port))) {
                Ok(()) => return ClosedPort { socket, port },
                Err(e) => tried.push(format!("{port}: {e}")),
            }
        }
        panic!("no port below {range} could be bound: {tried:?}")
    }

    /// `http://127.0.0.1:PORT{path}`: connections are refused.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Lets the port go, for a server to listen on: no ephemeral port is
    /// ever this one, so only a test choosing the same way could take it.
    pub fn release(self) -> u16 {
        drop(self.socket);
        self.port
    }
}
