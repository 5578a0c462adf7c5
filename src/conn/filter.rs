//! A classic BPF socket filter for a listening socket that drops packets
//! from a list of addresses: during a cooldown, the peer's SYNs are dropped
//! by the kernel, so its connection attempts cost tokend nothing at all and
//! its `connect()` waits out SYN retransmissions instead of reconnecting at
//! once (closing each connection at accept still costs an accept, a close
//! and the kernel's handshake on our side, tens of thousands of times a
//! second).
//!
//! A socket filter on a TCP socket sees each packet from its TCP header on;
//! `SKF_NET_OFF` reaches the IP header, whose version nibble picks the IPv4
//! or IPv6 source address to compare. Accepted connections inherit the
//! filter of the moment they were accepted, which only ever lists other
//! peers' addresses, so their own traffic passes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use socket2::SockFilter;

/// Most addresses one program lists; past it, the others are still closed
/// at accept.
pub const MAX_ADDRESSES: usize = 64;

/// `SKF_NET_OFF`: loads relative to the network (IP) header.
const NET: i32 = -0x100000;
// Classic BPF opcodes (linux/filter.h).
const LD_W_ABS: u16 = 0x20;
const LD_B_ABS: u16 = 0x30;
const RSH_K: u16 = 0x74;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
/// A socket filter returns how many bytes to keep: all, or none.
const ACCEPT: u32 = u32::MAX;
const DROP: u32 = 0;

fn net(offset: i32) -> u32 {
    (NET + offset) as u32
}

/// One instruction: opcode, jump if true, jump if false, constant.
type Op = (u16, u8, u8, u32);

fn op(code: u16, jt: u8, jf: u8, k: u32) -> Op {
    (code, jt, jf, k)
}

/// The program dropping packets from `addresses` (at most
/// [`MAX_ADDRESSES`] are used; IPv4-mapped IPv6 addresses as IPv4).
pub fn program(addresses: &[IpAddr]) -> Vec<SockFilter> {
    instructions(addresses).into_iter().map(|(code, jt, jf, k)| SockFilter::new(code, jt, jf, k)).collect()
}

fn instructions(addresses: &[IpAddr]) -> Vec<Op> {
    let canonical = addresses.iter().take(MAX_ADDRESSES).map(|ip| ip.to_canonical());
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = canonical.partition(IpAddr::is_ipv4);
    let v4: Vec<Ipv4Addr> =
        v4.into_iter().filter_map(|ip| if let IpAddr::V4(a) = ip { Some(a) } else { None }).collect();
    let v6: Vec<Ipv6Addr> =
        v6.into_iter().filter_map(|ip| if let IpAddr::V6(a) = ip { Some(a) } else { None }).collect();
    let mut p = vec![
        op(LD_B_ABS, 0, 0, net(0)), // A = first byte of the IP header
        op(RSH_K, 0, 0, 4),         // A = IP version
    ];
    // IPv4: load the source address, drop on a match, else accept.
    let v4_block = 1 + 2 * v4.len() + 1;
    p.push(op(JEQ_K, 0, v4_block as u8, 4));
    p.push(op(LD_W_ABS, 0, 0, net(12)));
    for a in &v4 {
        p.push(op(JEQ_K, 0, 1, u32::from(*a)));
        p.push(op(RET_K, 0, 0, DROP));
    }
    p.push(op(RET_K, 0, 0, ACCEPT));
    // IPv6: the source address is four words from offset 8.
    for a in &v6 {
        let o = a.octets();
        let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
        for (n, offset) in [8, 12, 16, 20].into_iter().enumerate() {
            p.push(op(LD_W_ABS, 0, 0, net(offset)));
            // On a mismatch, skip the rest of this address's checks.
            p.push(op(JEQ_K, 0, (7 - 2 * n) as u8, w(n * 4)));
        }
        p.push(op(RET_K, 0, 0, DROP));
    }
    p.push(op(RET_K, 0, 0, ACCEPT));
    p
}

/// Puts `addresses` in the filter of `listener` (no filter when empty).
pub fn install(listener: &tokio::net::TcpListener, addresses: &[IpAddr]) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(listener);
    if addresses.is_empty() {
        // ENOENT: there was no filter to detach.
        return match socket.detach_filter() {
            Err(e) if e.raw_os_error() == Some(2) => Ok(()),
            other => other,
        };
    }
    socket.attach_filter(&program(addresses))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `program` over an IP header, as the kernel would: the verdict.
    fn run(program: &[Op], ip_header: &[u8]) -> u32 {
        let load = |k: u32, width: usize| {
            let at = (k as i32 - NET) as usize;
            ip_header[at..at + width].iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b))
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let (code, jt, jf, k) = program[pc];
            pc += 1;
            match code {
                LD_B_ABS => a = load(k, 1),
                LD_W_ABS => a = load(k, 4),
                RSH_K => a >>= k,
                JEQ_K => pc += usize::from(if a == k { jt } else { jf }),
                RET_K => return k,
                _ => panic!("unexpected opcode {code:#x}"),
            }
        }
    }

    fn v4_packet(src: &str) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
        h.extend_from_slice(&src.parse::<Ipv4Addr>().unwrap().octets());
        h.extend_from_slice(&[127, 0, 0, 1]);
        h
    }

    fn v6_packet(src: &str) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        h.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        h.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        h
    }

    #[test]
    fn listed_sources_are_dropped_and_every_other_passes() {
        let listed: Vec<IpAddr> =
            ["10.0.0.1", "2001:db8::1", "::ffff:10.0.0.2", "2001:db8::2"].iter().map(|a| a.parse().unwrap()).collect();
        let p = instructions(&listed);
        for dropped in ["10.0.0.1", "10.0.0.2"] {
            assert_eq!(run(&p, &v4_packet(dropped)), DROP, "{dropped}");
        }
        for dropped in ["2001:db8::1", "2001:db8::2"] {
            assert_eq!(run(&p, &v6_packet(dropped)), DROP, "{dropped}");
        }
        for passed in ["10.0.0.3", "127.0.0.1", "1.0.0.10"] {
            assert_eq!(run(&p, &v4_packet(passed)), ACCEPT, "{passed}");
        }
        // Differs from a listed address in one word only, each word in turn.
        for passed in ["2001:db8::3", "2001:db9::1", "2001:db8:0:1::1", "2001:db8::1:0:0:1", "::1"] {
            assert_eq!(run(&p, &v6_packet(passed)), ACCEPT, "{passed}");
        }
        // A full list stays within the 8-bit jumps and the 64-address cap.
        let full: Vec<IpAddr> = (1..=200u32).map(|i| IpAddr::V4(Ipv4Addr::from(i))).collect();
        let p = instructions(&full);
        assert_eq!(p.len(), 2 + 1 + 1 + 2 * MAX_ADDRESSES + 1 + 1);
        assert_eq!(run(&p, &v4_packet("0.0.0.64")), DROP);
        assert_eq!(run(&p, &v4_packet("0.0.0.65")), ACCEPT, "past the cap: left to accept");
    }
}
