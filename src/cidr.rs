//! IP allowlists: the networks a token may be presented from.
//!
//! An entry is an IPv4 or IPv6 network in CIDR notation, or a single
//! address (taken as `/32` or `/128`). Entries are kept in canonical form —
//! the address as Rust prints it, then the prefix length — and an entry with
//! host bits set (`10.1.2.3/8`) is refused rather than silently widened or
//! narrowed: the operator meant one of two different things. An IPv4-mapped
//! IPv6 network (`::ffff:10.0.0.0/104`) is the IPv4 network it maps, so both
//! spellings allow the same clients, and a mapped client address matches
//! IPv4 entries.
//!
//! Matching runs on every Verify of a restricted token: a list is at most
//! [`MAX_CIDRS`] entries of a mask and a compare each, no allocation.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
    sync::Arc,
};

/// Most entries in one token's allowlist.
pub const MAX_CIDRS: usize = 64;

/// One allowed network.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cidr {
    /// An IPv4 network: address bits and prefix length (0–32).
    V4(u32, u8),
    /// An IPv6 network: address bits and prefix length (0–128).
    V6(u128, u8),
}

/// Why an allowlist entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCidr {
    /// Not an address, nor an address with a prefix length.
    #[error("not an IP address or CIDR network (e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)")]
    Syntax,
    /// The prefix length is longer than the address.
    #[error("prefix length {0} is too long for the address")]
    Prefix(u8),
    /// Bits are set past the prefix: which network was meant is unclear.
    #[error("host bits are set past the prefix; did you mean {0}?")]
    HostBits(Cidr),
}

impl Cidr {
    /// Whether `ip` lies in this network.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, canonical_ip(ip)) {
            (Cidr::V4(net, len), IpAddr::V4(a)) => u32::from(a) & mask32(len) == net,
            (Cidr::V6(net, len), IpAddr::V6(a)) => u128::from(a) & mask128(len) == net,
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(s: &str) -> Result<Cidr, InvalidCidr> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => {
                // Digits only: u8's parser would take a sign ("+8").
                if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(InvalidCidr::Syntax);
                }
                (addr, Some(len.parse::<u8>().map_err(|_| InvalidCidr::Syntax)?))
            }
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| InvalidCidr::Syntax)?;
        let cidr = match addr {
            IpAddr::V4(a) => {
                let len = len.unwrap_or(32);
                if len > 32 {
                    return Err(InvalidCidr::Prefix(len));
                }
                Cidr::V4(u32::from(a), len)
            }
            IpAddr::V6(a) => {
                let len = len.unwrap_or(128);
                if len > 128 {
                    return Err(InvalidCidr::Prefix(len));
                }
                match a.to_ipv4_mapped() {
                    Some(v4) if len >= 96 => Cidr::V4(u32::from(v4), len - 96),
                    _ => Cidr::V6(u128::from(a), len),
                }
            }
        };
        let network = cidr.network();
        if network != cidr { Err(InvalidCidr::HostBits(network)) } else { Ok(cidr) }
    }
}

impl Cidr {
    /// The network with the host bits cleared.
    fn network(self) -> Cidr {
        match self {
            Cidr::V4(a, len) => Cidr::V4(a & mask32(len), len),
            Cidr::V6(a, len) => Cidr::V6(a & mask128(len), len),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Cidr::V4(a, len) => write!(f, "{}/{len}", Ipv4Addr::from(a)),
            Cidr::V6(a, len) => write!(f, "{}/{len}", Ipv6Addr::from(a)),
        }
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A token's allowlist; empty = any address. Shared (`Arc`) so copies of a
/// record (a revision, a rotation) do not copy the list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Allowlist(Option<Arc<[Cidr]>>);

impl Allowlist {
    /// The list of `cidrs`, duplicates removed, in the order given.
    pub fn new(cidrs: impl IntoIterator<Item = Cidr>) -> Allowlist {
        let mut unique: Vec<Cidr> = Vec::new();
        for c in cidrs {
            if !unique.contains(&c) {
                unique.push(c);
            }
        }
        Allowlist((!unique.is_empty()).then(|| unique.into()))
    }

    /// Whether every address is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether both share one allocation (the index interns allowlists).
    pub fn shares_allocation(&self, other: &Allowlist) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The entries.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Cidr> + '_ {
        self.0.as_deref().unwrap_or_default().iter().copied()
    }

    /// Whether a request from `client` may use the token: always with an
    /// empty list; otherwise only when its address is inside one entry.
    #[inline]
    pub fn allows(&self, client: Client<'_>) -> bool {
        let Some(cidrs) = &self.0 else { return true };
        client.ip().is_some_and(|ip| cidrs.iter().any(|c| c.contains(ip)))
    }
}

/// Where a request came from, as far as an allowlist is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client<'a> {
    /// Nobody said: a token with an allowlist is refused.
    Unknown,
    /// The address a sibling saw, as it reported it (`VerifyRequest.client_ip`):
    /// a bare address, or a socket address as `1.2.3.4:5678` or
    /// `[2001:db8::1]:443` (what many proxies pass on). Parsed only when a
    /// token has an allowlist, so Verify of any other token never reads it.
    Reported(&'a str),
    /// The peer address of the connection (the admin plane's caller).
    Peer(IpAddr),
}

impl Client<'_> {
    /// The address, if there is a well-formed one.
    fn ip(self) -> Option<IpAddr> {
        match self {
            Client::Unknown => None,
            Client::Reported(s) => s.parse::<IpAddr>().ok().or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip())),
            Client::Peer(ip) => Some(ip),
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it maps.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn entries_are_kept_in_canonical_form() {
        for (given, canonical) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:DB8::/32", "2001:db8::/32"),
            ("2001:0db8:0000::/48", "2001:db8::/48"),
            ("::1", "::1/128"),
            ("::/0", "::/0"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:192.0.2.7", "192.0.2.7/32"),
        ] {
            assert_eq!(cidr(given).to_string(), canonical, "{given}");
        }
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        assert_eq!("10.1.2.3/8".parse::<Cidr>(), Err(InvalidCidr::HostBits(cidr("10.0.0.0/8"))));
        assert_eq!("2001:db8::1/32".parse::<Cidr>(), Err(InvalidCidr::HostBits(cidr("2001:db8::/32"))));
        assert_eq!("10.0.0.0/33".parse::<Cidr>(), Err(InvalidCidr::Prefix(33)));
        assert_eq!("::/129".parse::<Cidr>(), Err(InvalidCidr::Prefix(129)));
        for bad in ["", "10.0.0", "10.0.0.0/", "10.0.0.0/+8", "10.0.0.0/-1", "10.0.0.0/0008", "host/8", "1.2.3.4:80"] {
            assert_eq!(bad.parse::<Cidr>(), Err(InvalidCidr::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn addresses_match_their_networks_only() {
        let list = Allowlist::new([cidr("10.0.0.0/8"), cidr("2001:db8::/32"), cidr("192.0.2.7")]);
        for inside in ["10.0.0.1", "10.255.255.255", "2001:db8::1", "2001:db8:ffff::", "192.0.2.7"] {
            assert!(list.allows(Client::Reported(inside)), "{inside}");
        }
        for outside in ["11.0.0.1", "9.255.255.255", "2001:db9::1", "192.0.2.8", "::1", ""] {
            assert!(!list.allows(Client::Reported(outside)), "{outside}");
        }
        // Mapped IPv6 addresses match IPv4 entries; socket addresses are read.
        assert!(list.allows(Client::Reported("::ffff:10.1.2.3")));
        assert!(!list.allows(Client::Reported("::ffff:11.1.2.3")));
        assert!(list.allows(Client::Reported("10.1.2.3:5678")));
        assert!(list.allows(Client::Reported("[2001:db8::5]:443")));
        assert!(!list.allows(Client::Reported("not an address")));
        // An IPv4 entry does not match a (non-mapped) IPv6 address and back.
        assert!(!Allowlist::new([cidr("0.0.0.0/0")]).allows(Client::Reported("2001:db8::1")));
        assert!(!Allowlist::new([cidr("::/0")]).allows(Client::Reported("10.0.0.1")));
        assert!(Allowlist::new([cidr("0.0.0.0/0")]).allows(Client::Reported("::ffff:1.2.3.4")));
    }

    #[test]
    fn a_peer_address_is_matched_without_text_and_an_unknown_one_never() {
        let list = Allowlist::new([cidr("10.0.0.0/8")]);
        assert!(list.allows(Client::Peer("10.1.2.3".parse().unwrap())));
        assert!(list.allows(Client::Peer("::ffff:10.1.2.3".parse().unwrap())));
        assert!(!list.allows(Client::Peer("11.1.2.3".parse().unwrap())));
        assert!(!list.allows(Client::Unknown));
        assert!(Allowlist::new([]).allows(Client::Unknown));
    }

    #[test]
    fn an_empty_list_allows_any_address_even_none() {
        let list = Allowlist::new([]);
        assert!(list.is_empty());
        assert!(list.allows(Client::Reported("")));
        assert!(list.allows(Client::Reported("garbage")));
    }

    #[test]
    fn duplicates_are_removed_in_order() {
        let list = Allowlist::new([cidr("10.0.0.0/8"), cidr("::1"), cidr("::ffff:10.0.0.0/104")]);
        assert_eq!(list.iter().map(|c| c.to_string()).collect::<Vec<_>>(), ["10.0.0.0/8", "::1/128"]);
    }
}
