//! Token ids: UUIDv7, strictly increasing even within one millisecond, so
//! id order is creation order (List pages by id).

use std::{fmt, str::FromStr, sync::Mutex};

use rand::{TryRngCore, rngs::OsRng};

use crate::clock::Time;

/// A token id (a version-7 UUID), as big-endian bytes: byte order is id
/// order, and byte alignment keeps an `Option<TokenId>` at 17 bytes rather
/// than a `u128`'s padded 32 (two of them sit in every record).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenId([u8; 16]);

/// The string is not a version-7 UUID in canonical hyphenated form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a token id (expected a UUIDv7 like 0190b2c4-6a1f-7c3e-9d2b-1a2b3c4d5e6f)")]
pub struct InvalidId;

// Layout of a UUIDv7: 48-bit unix_ts_ms | ver (4) | rand_a (12) | var (2) | rand_b (62).
const VERSION_BITS: u128 = 0x7 << 76;
const VARIANT_BITS: u128 = 0b10 << 62;
const FIXED_MASK: u128 = (0xf << 76) | (0b11 << 62);

impl TokenId {
    /// The id as 16 big-endian bytes (its storage key: byte order = id order).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    fn value(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// The id from its 16-byte form, if those bytes are a UUIDv7.
    pub fn from_bytes(bytes: [u8; 16]) -> Result<TokenId, InvalidId> {
        Self::from_u128(u128::from_be_bytes(bytes))
    }

    fn from_u128(v: u128) -> Result<TokenId, InvalidId> {
        if v & FIXED_MASK == VERSION_BITS | VARIANT_BITS { Ok(TokenId(v.to_be_bytes())) } else { Err(InvalidId) }
    }

    /// The 122 bits that are not version or variant, as one counter.
    fn payload(self) -> u128 {
        let v = self.value();
        ((v >> 80) << 74) | (((v >> 64) & 0xfff) << 62) | (v & ((1 << 62) - 1))
    }

    fn from_payload(p: u128) -> TokenId {
        let ts = p >> 74;
        let rand_a = (p >> 62) & 0xfff;
        let rand_b = p & ((1 << 62) - 1);
        TokenId(((ts << 80) | VERSION_BITS | (rand_a << 64) | VARIANT_BITS | rand_b).to_be_bytes())
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ascii = self.to_ascii();
        // Only hex digits and hyphens.
        f.write_str(std::str::from_utf8(&ascii).map_err(|_| fmt::Error)?)
    }
}

impl TokenId {
    /// The canonical hyphenated form as bytes, without allocating (Verify
    /// writes it straight into its response).
    pub fn to_ascii(self) -> [u8; 36] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 36];
        let mut nibbles = self.0.iter().flat_map(|b| [b >> 4, b & 0xf]);
        for (i, slot) in out.iter_mut().enumerate() {
            if !matches!(i, 8 | 13 | 18 | 23) {
                // 32 nibbles for the 32 non-hyphen positions.
                *slot = HEX[usize::from(nibbles.next().unwrap_or(0))];
            }
        }
        out
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for TokenId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<TokenId, InvalidId> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return Err(InvalidId);
        }
        let mut v: u128 = 0;
        for (i, &c) in b.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(InvalidId);
                }
                continue;
            }
            let d = (c as char).to_digit(16).ok_or(InvalidId)?;
            v = (v << 4) | u128::from(d);
        }
        TokenId::from_u128(v)
    }
}

/// Hands out strictly increasing ids.
#[derive(Debug, Default)]
pub struct IdGenerator {
    /// The last id handed out; a new id is never at or below it, even when
    /// the clock stands still or steps back.
    last: Mutex<u128>,
}

impl IdGenerator {
    /// A generator that will never return an id at or below `floor` (the
    /// newest id in the store, so a clock stepped back across a restart
    /// still yields creation order).
    pub fn starting_after(floor: Option<TokenId>) -> IdGenerator {
        IdGenerator { last: Mutex::new(floor.map_or(0, TokenId::payload)) }
    }

    /// A new id for a token created at `now`.
    pub fn next(&self, now: Time) -> TokenId {
        let mut random = [0u8; 16];
        OsRng.try_fill_bytes(&mut random).expect("the operating system's random number generator failed");
        let rand74 = u128::from_be_bytes(random) & ((1 << 74) - 1);
        let candidate = (u128::from(now.as_millis() & ((1 << 48) - 1)) << 74) | rand74;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        // Within one millisecond (or if the clock went back) step up from the
        // last id instead: still unique, still ordered. The step is random,
        // not 1: replicas sharing a store start from the same newest id, and
        // counting from it they would mint the same ids.
        let step = 1 + (rand74 >> 42); // 1 ..= 2^32
        let payload = if candidate > *last { candidate } else { *last + step };
        *last = payload;
        TokenId::from_payload(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_starting_from_one_newest_id_mint_different_ids() {
        let floor = IdGenerator::default().next(Time(1_700_000_000_000_000_000));
        let (a, b) = (IdGenerator::starting_after(Some(floor)), IdGenerator::starting_after(Some(floor)));
        // A clock that stands still (or stands behind the floor): both step
        // up from the same id.
        let now = Time(1_600_000_000_000_000_000);
        let minted_a: std::collections::HashSet<_> = (0..1000).map(|_| a.next(now)).collect();
        assert!((0..1000).all(|_| !minted_a.contains(&b.next(now))));
    }

    #[test]
    fn ids_are_strictly_increasing_within_one_millisecond() {
        let g = IdGenerator::default();
        let now = Time(1_700_000_000_000_000_000);
        let mut prev = g.next(now);
        for _ in 0..10_000 {
            let id = g.next(now);
            assert!(id > prev);
            assert!(id.to_string() > prev.to_string(), "string order is id order");
            prev = id;
        }
    }

    #[test]
    fn ids_stay_ordered_when_the_clock_steps_back() {
        let g = IdGenerator::default();
        let a = g.next(Time(2_000_000_000_000_000_000));
        let b = g.next(Time(1_000_000_000_000_000_000));
        assert!(b > a);
        let g2 = IdGenerator::starting_after(Some(b));
        assert!(g2.next(Time(0)) > b);
    }

    #[test]
    fn ids_round_trip_through_text_and_bytes() {
        let g = IdGenerator::default();
        let id = g.next(Time(1_750_000_000_123_000_000));
        let s = id.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "7", "version nibble");
        assert_eq!(s.parse::<TokenId>(), Ok(id));
        let known: TokenId = "0190b2c4-6a1f-7c3e-9d2b-1a2b3c4d5e6f".parse().unwrap();
        assert_eq!(known.to_string(), "0190b2c4-6a1f-7c3e-9d2b-1a2b3c4d5e6f");
        assert_eq!(s.to_uppercase().parse::<TokenId>(), Ok(id));
        assert_eq!(TokenId::from_bytes(id.to_bytes()), Ok(id));
        // The timestamp is the creation millisecond.
        assert_eq!((id.value() >> 80) as u64, 1_750_000_000_123);
    }

    #[test]
    fn non_ids_are_rejected() {
        for bad in [
            "",
            "x",
            "00000000-0000-0000-0000-000000000000",
            "0190b2c4-6a1f-4c3e-9d2b-1a2b3c4d5e6f", // version 4
            "0190b2c4-6a1f-7c3e-cd2b-1a2b3c4d5e6f", // wrong variant
            "0190b2c46a1f7c3e9d2b1a2b3c4d5e6f",
            "0190b2c4-6a1f-7c3e-9d2b-1a2b3c4d5e6g",
            "0190b2c4-6a1f-7c3e-9d2b-1a2b3c4d5e6f0",
            "0190b2c4+6a1f-7c3e-9d2b-1a2b3c4d5e6f",
            "٠190b2c4-6a1f-7c3e-9d2b-1a2b3c4d5e6",
        ] {
            assert_eq!(bad.parse::<TokenId>(), Err(InvalidId), "{bad:?}");
        }
        assert!("0190b2c4-6a1f-7c3e-9d2b-1a2b3c4d5e6f".parse::<TokenId>().is_ok());
    }
}
