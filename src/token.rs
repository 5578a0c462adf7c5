//! The token format, and the only code that sees a token's secret.
//!
//! A token is `<prefix>_<body><checksum>`:
//!
//! * `prefix`: 1–16 of `[a-z0-9]`, starting with a letter (`tk` by default).
//!   It tells humans and secret scanners what the string is; tokens keep
//!   verifying after the configured prefix changes.
//! * `body`: 256 bits from the operating system's CSPRNG, as exactly
//!   [`BODY_LEN`] base62 characters (62^43 > 2^256, so the width is fixed).
//! * `checksum`: CRC-32 of `<prefix>_<body>`, as exactly [`CHECKSUM_LEN`]
//!   base62 characters. CRC-32 catches every single-character change and every
//!   truncation, so typos are rejected as malformed without touching the
//!   index, and scanners can recognise a real token offline (the same scheme
//!   as GitHub's token format).
//!
//! tokend stores only [`TokenHash`]: blake3 in `derive_key` mode over the whole
//! token. A secret lives in a [`Secret`], which never prints itself and is
//! zeroed when dropped.

use std::fmt;

use rand::{TryRngCore, rngs::OsRng};
use zeroize::Zeroizing;

// The format and its parsing live in the client crate, so that a sibling's
// cache judges a presented token exactly as Verify does.
pub use tokend_client::format::{
    BODY_LEN, CHECKSUM_LEN, MAX_PREFIX_LEN, MAX_TOKEN_LEN, Malformed, TokenHash, hash as hash_token, parse, parse_bare,
    validate_prefix,
};

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "tk";

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A full token (`<prefix>_<body><checksum>`). Its `Debug` and `Display` are
/// redacted; only [`Secret::expose`] gives the text, and the memory is zeroed
/// on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Generates a new token with `prefix` from 256 bits of OS randomness.
    ///
    /// # Panics
    /// If `prefix` is invalid (see [`validate_prefix`]) — configuration is
    /// validated before any token is generated — or the OS has no randomness.
    pub fn generate(prefix: &str) -> Secret {
        validate_prefix(prefix).expect("token prefix is validated at start-up");
        let mut random = Zeroizing::new([0u8; 32]);
        OsRng.try_fill_bytes(random.as_mut()).expect("the operating system's random number generator failed");
        let mut text = String::with_capacity(prefix.len() + 1 + BODY_LEN + CHECKSUM_LEN);
        text.push_str(prefix);
        text.push('_');
        encode_body(&mut random, &mut text);
        let crc = crc32fast::hash(text.as_bytes());
        push_base62_fixed(u64::from(crc), CHECKSUM_LEN, &mut text);
        Secret(Zeroizing::new(text))
    }

    /// Completes a token from a random body the caller generated (43 base62
    /// characters): `<prefix>_<body><checksum>`. This lets a deployment tool
    /// that can make random strings but not CRC-32 (a Helm template) create
    /// the first admin token.
    pub fn from_body(prefix: &str, body: &str) -> Result<Secret, Malformed> {
        validate_prefix(prefix)?;
        if body.len() != BODY_LEN {
            return Err(Malformed::Shape);
        }
        if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Malformed::Alphabet);
        }
        let mut text = String::with_capacity(prefix.len() + 1 + BODY_LEN + CHECKSUM_LEN);
        text.push_str(prefix);
        text.push('_');
        text.push_str(body);
        let crc = crc32fast::hash(text.as_bytes());
        push_base62_fixed(u64::from(crc), CHECKSUM_LEN, &mut text);
        Ok(Secret(Zeroizing::new(text)))
    }

    /// Accepts `text` as a token if it is well-formed (no header scheme, no
    /// surrounding whitespace). Used for bootstrap tokens handed in by operators.
    pub fn from_text(text: &str) -> Result<Secret, Malformed> {
        parse_bare(text)?;
        Ok(Secret(Zeroizing::new(text.to_owned())))
    }

    /// The token text. Call only to hand the token to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The stored hash of this token.
    pub fn hash(&self) -> TokenHash {
        hash_token(self.expose())
    }

    /// The masked hint shown in lists.
    pub fn hint(&self) -> String {
        hint(self.expose())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The masked hint of a well-formed token: prefix, the first four characters
/// of the body and the last four of the token (`tk_4fQz…x9Ab`). Eight
/// characters of a 49-character tail: enough to tell tokens apart, far too
/// little to guess the rest.
pub fn hint(token: &str) -> String {
    let split = token.len() - BODY_LEN - CHECKSUM_LEN;
    let head = &token[..split + 4];
    let tail = &token[token.len() - 4..];
    format!("{head}…{tail}")
}

/// Appends the 256-bit big-endian number in `n` as exactly [`BODY_LEN`] base62
/// digits, most significant first. Consumes `n` (it ends as zero).
fn encode_body(n: &mut [u8; 32], out: &mut String) {
    let mut digits = Zeroizing::new([0u8; BODY_LEN]);
    for d in digits.iter_mut().rev() {
        // Long division of the whole number by 62; the remainder is the digit.
        let mut rem = 0u32;
        for byte in n.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            rem = acc % 62;
        }
        *d = ALPHABET[rem as usize];
    }
    out.extend(digits.iter().map(|&d| d as char));
}

fn push_base62_fixed(mut n: u64, width: usize, out: &mut String) {
    let mut digits = [b'0'; 16];
    for d in digits[..width].iter_mut().rev() {
        *d = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out.extend(digits[..width].iter().map(|&d| d as char));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_round_trip_and_have_fixed_length() {
        for prefix in ["tk", "a", "acme9", "abcdefghijklmnop"] {
            let s = Secret::generate(prefix);
            let text = s.expose();
            assert_eq!(text.len(), prefix.len() + 1 + BODY_LEN + CHECKSUM_LEN);
            assert!(text.starts_with(&format!("{prefix}_")));
            assert_eq!(parse(text), Ok(text));
            assert_eq!(Secret::from_text(text).unwrap(), s);
            assert_eq!(s.hash(), hash_token(text));
        }
    }

    #[test]
    fn tokens_differ_and_hashes_differ() {
        let a = Secret::generate("tk");
        let b = Secret::generate("tk");
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn every_single_character_change_is_rejected() {
        let s = Secret::generate("tk");
        let text = s.expose().as_bytes().to_vec();
        let mut candidates: Vec<u8> = ALPHABET.to_vec();
        candidates.extend_from_slice(b"_-. ");
        for i in 0..text.len() {
            for &c in &candidates {
                if c == text[i] {
                    continue;
                }
                let mut changed = text.clone();
                changed[i] = c;
                let changed = String::from_utf8(changed).unwrap();
                assert!(parse_bare(&changed).is_err(), "accepted a change at {i}: {changed:?}");
            }
        }
    }

    #[test]
    fn truncations_and_extensions_are_rejected() {
        let s = Secret::generate("tk");
        let text = s.expose();
        for n in 0..text.len() {
            assert!(parse(&text[..n]).is_err(), "prefix of length {n}");
            assert!(parse(&text[n + 1..]).is_err(), "suffix from {}", n + 1);
        }
        assert!(parse(&format!("{text}0")).is_err());
        assert!(parse(&format!("{text}{text}")).is_err());
    }

    #[test]
    fn header_schemes_and_whitespace() {
        let s = Secret::generate("tk");
        let t = s.expose();
        for v in [
            format!("Bearer {t}"),
            format!("bearer {t}"),
            format!("BEARER\t{t}"),
            format!("  Bearer   {t}  "),
            format!("access_token {t}"),
            format!("Access_Token {t}"),
            format!("\n{t}\n"),
        ] {
            assert_eq!(parse(&v), Ok(t), "{v:?}");
        }
        for v in [format!("Basic {t}"), format!("Bearer {t} x"), format!("Bearer{t}"), String::new()] {
            assert!(parse(&v).is_err(), "{v:?}");
        }
    }

    #[test]
    fn prefix_rules() {
        assert!(validate_prefix("tk").is_ok());
        assert!(validate_prefix("a1").is_ok());
        for bad in ["", "1a", "Tk", "t_k", "abcdefghijklmnopq", "tk-x", "ţk"] {
            assert_eq!(validate_prefix(bad), Err(Malformed::Prefix), "{bad:?}");
        }
    }

    #[test]
    fn unicode_look_alikes_do_not_panic_and_are_rejected() {
        let s = Secret::generate("tk");
        // Replace one ASCII char by a Cyrillic look-alike: different byte length.
        let t = s.expose().replacen('_', "＿", 1);
        assert!(parse(&t).is_err());
        let t = format!("tк_{}", &s.expose()[3..]);
        assert!(parse(&t).is_err());
    }

    #[test]
    fn a_token_completed_from_a_body_is_well_formed_and_stable() {
        let s = Secret::generate("tk");
        let body = &s.expose()[3..3 + BODY_LEN];
        assert_eq!(Secret::from_body("tk", body).unwrap(), s, "the same body gives the same token");
        let other = Secret::from_body("acme", body).unwrap();
        assert!(parse_bare(other.expose()).is_ok());
        assert_eq!(Secret::from_body("tk", &body[1..]).err(), Some(Malformed::Shape));
        assert_eq!(Secret::from_body("tk", &format!("{}_", &body[1..])).err(), Some(Malformed::Alphabet));
        assert_eq!(Secret::from_body("TK", body).err(), Some(Malformed::Prefix));
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::generate("tk");
        let body = &s.expose()[3..];
        assert!(!format!("{s:?}").contains(body));
        assert!(!format!("{s}").contains(body));
    }

    #[test]
    fn hint_masks_the_body() {
        let s = Secret::generate("tk");
        let h = s.hint();
        let t = s.expose();
        assert_eq!(h, format!("{}…{}", &t[..7], &t[t.len() - 4..]));
        assert!(h.chars().count() < 16);
    }

    #[test]
    fn body_encoding_is_fixed_width_at_the_extremes() {
        let mut out = String::new();
        encode_body(&mut [0u8; 32], &mut out);
        assert_eq!(out, "0".repeat(BODY_LEN));
        let mut out = String::new();
        encode_body(&mut [0xff; 32], &mut out);
        assert_eq!(out.len(), BODY_LEN);
        assert_ne!(out.as_bytes()[0], b'0');
    }
}
