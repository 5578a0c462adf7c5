//! The token format and the rules a presented credential is judged by —
//! the one copy both sides use: tokend's hot path (`tokend::token`,
//! `tokend::spec`) and the sibling's cache, so that a cached answer is the
//! answer the RPC would give.
//!
//! A token is `<prefix>_<body><checksum>`:
//!
//! * `prefix`: 1–16 of `[a-z0-9]`, starting with a letter (`tk` by default).
//! * `body`: 256 random bits as exactly [`BODY_LEN`] base62 characters.
//! * `checksum`: CRC-32 of `<prefix>_<body>`, as exactly [`CHECKSUM_LEN`]
//!   base62 characters, so typos and truncations are rejected without a
//!   lookup and scanners can recognise a token offline (GitHub's scheme).
//!
//! It is presented bare or as an HTTP header value `Bearer <token>` /
//! `access_token <token>`, and identified by its [`TokenHash`] (blake3 in
//! `derive_key` mode), never by its text.

use std::{fmt, sync::LazyLock};

/// Base62 characters of a token's random body.
pub const BODY_LEN: usize = 43;
/// Base62 characters of a token's checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Longest token prefix.
pub const MAX_PREFIX_LEN: usize = 16;
/// Longest token; anything longer is malformed without further work.
pub const MAX_TOKEN_LEN: usize = MAX_PREFIX_LEN + 1 + BODY_LEN + CHECKSUM_LEN;
/// Most scopes on a token, or required by one Verify.
pub const MAX_SCOPES: usize = 64;
/// Longest scope, in bytes.
pub const MAX_SCOPE_BYTES: usize = 128;

/// blake3 `derive_key` context. Changing it orphans every stored hash.
const HASH_CONTEXT: &str = "tokend 2026-11-22 api token hash v1";

/// The context's key, hashed once: `derive_key` would hash the context
/// again on every call, and cloning a keyed `Hasher` copies its ~1.9 KB
/// state, where a fresh one from the key initialises only a few words.
static CONTEXT_KEY: LazyLock<[u8; 32]> = LazyLock::new(|| blake3::hazmat::hash_derive_key_context(HASH_CONTEXT));

/// Why a presented string is not a token. Deliberately coarse: callers only
/// learn "malformed"; the detail is for tests and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Empty, too long, or not `<prefix>_<body><checksum>`.
    #[error("not shaped like a token")]
    Shape,
    /// The prefix is not 1–16 of `[a-z0-9]` starting with a letter.
    #[error("invalid token prefix")]
    Prefix,
    /// A character outside base62 in the body or checksum.
    #[error("invalid character in token")]
    Alphabet,
    /// The checksum does not match.
    #[error("token checksum mismatch")]
    Checksum,
}

/// A token's identity: what tokend stores, what caches are keyed by and what
/// `RecordUse` reports. blake3 (derive_key) of the whole token.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenHash(pub [u8; 32]);

impl std::hash::Hash for TokenHash {
    /// blake3 output is already uniformly distributed, so eight of its bytes
    /// are as good a hash as any hasher would make of all 32 (maps keyed by
    /// it use [`PassThrough`]; equality still compares all 32 bytes).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret, but eight bytes are enough to tell two apart.
        write!(f, "TokenHash(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// A hasher for keys that are already uniformly random ([`TokenHash`]): it
/// keeps the one `u64` it is given.
#[derive(Clone, Copy, Default)]
pub struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by TokenHash; fold anything else in rather than ignore it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }
}

/// Builds [`PassThrough`] hashers.
pub type PassThroughBuilder = std::hash::BuildHasherDefault<PassThrough>;

/// Checks a token prefix: 1–16 of `[a-z0-9]`, starting with a letter.
pub fn validate_prefix(prefix: &str) -> Result<(), Malformed> {
    let b = prefix.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_PREFIX_LEN
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok { Ok(()) } else { Err(Malformed::Prefix) }
}

/// Parses a presented credential: a bare token or an HTTP header value
/// `Bearer <token>` / `access_token <token>` (scheme case-insensitive,
/// surrounding whitespace ignored). Returns the token text, checksum verified.
///
/// On both hot paths (tokend's Verify, a sibling's cache hit): it does not
/// allocate.
#[inline]
pub fn parse(presented: &str) -> Result<&str, Malformed> {
    let trimmed = presented.trim();
    let token = match trimmed.split_once(|c: char| c.is_ascii_whitespace()) {
        None => trimmed,
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("access_token") =>
        {
            rest.trim_start()
        }
        Some(_) => return Err(Malformed::Shape),
    };
    parse_bare(token)?;
    Ok(token)
}

/// Parses a bare token: shape, prefix, alphabet and checksum.
#[inline]
pub fn parse_bare(token: &str) -> Result<(), Malformed> {
    let bytes = token.as_bytes();
    let fixed = BODY_LEN + CHECKSUM_LEN;
    if bytes.len() < fixed + 2 || bytes.len() > MAX_TOKEN_LEN {
        return Err(Malformed::Shape);
    }
    let split = bytes.len() - fixed - 1;
    if bytes[split] != b'_' {
        return Err(Malformed::Shape);
    }
    // Safe to slice: the byte at `split` is ASCII, so both sides are on char
    // boundaries.
    validate_prefix(&token[..split])?;
    if !bytes[split + 1..].iter().all(u8::is_ascii_alphanumeric) {
        return Err(Malformed::Alphabet);
    }
    let (signed, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    let presented = checksum.iter().fold(0u64, |n, &c| n * 62 + u64::from(base62_value(c)));
    if presented != u64::from(crc32fast::hash(signed)) {
        return Err(Malformed::Checksum);
    }
    Ok(())
}

#[inline]
fn base62_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'Z' => c - b'A' + 10,
        _ => c - b'a' + 36,
    }
}

/// The hash tokend identifies `token` (its full text, no scheme) by.
#[inline]
pub fn hash(token: &str) -> TokenHash {
    let mut hasher = <blake3::Hasher as blake3::hazmat::HasherExt>::new_from_context_key(&CONTEXT_KEY);
    hasher.update(token.as_bytes());
    TokenHash(*hasher.finalize().as_bytes())
}

/// Whether `scope` is a scope: `[A-Za-z0-9._:/-]{1,128}`.
#[inline]
pub fn is_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= MAX_SCOPE_BYTES
        && scope.bytes().all(|c| c.is_ascii_alphanumeric() || b"._:/-".contains(&c))
}

/// Refuses required scopes as tokend does: INVALID_ARGUMENT naming the field,
/// with tokend's own message.
pub(crate) fn check_required_scopes<S: AsRef<str>>(scopes: &[S]) -> Result<(), tonic::Status> {
    if scopes.len() > MAX_SCOPES {
        return Err(tonic::Status::invalid_argument(format!("invalid required_scopes: at most {MAX_SCOPES} scopes")));
    }
    match scopes.iter().position(|s| !is_scope(s.as_ref())) {
        Some(i) => Err(tonic::Status::invalid_argument(format!(
            "invalid required_scopes[{i}]: must match [A-Za-z0-9._:/-]{{1,128}}"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token made by tokend's own format (`tk_` + 43 base62 + checksum).
    fn token(body_char: char) -> String {
        let mut text = format!("tk_{}", body_char.to_string().repeat(BODY_LEN));
        let mut crc = u64::from(crc32fast::hash(text.as_bytes()));
        let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut digits = [b'0'; CHECKSUM_LEN];
        for d in digits.iter_mut().rev() {
            *d = alphabet[(crc % 62) as usize];
            crc /= 62;
        }
        text.push_str(std::str::from_utf8(&digits).unwrap());
        text
    }

    #[test]
    fn parses_bare_and_header_forms_and_refuses_the_rest() {
        let t = token('a');
        assert_eq!(parse(&t), Ok(t.as_str()));
        assert_eq!(parse(&format!("  Bearer   {t} ")), Ok(t.as_str()));
        assert_eq!(parse(&format!("access_token {t}")), Ok(t.as_str()));
        assert_eq!(parse(&format!("Basic {t}")).ok(), None);
        let mut typo = t.clone().into_bytes();
        typo[10] = b'b';
        assert_eq!(parse(std::str::from_utf8(&typo).unwrap()).ok(), None, "checksum catches a typo");
        assert_eq!(parse(&t[..t.len() - 1]).ok(), None);
        assert_eq!(parse(&format!("T{}", &t[1..])).ok(), None, "upper-case prefix");
        assert_eq!(parse("").ok(), None);
        assert_eq!(parse("Bearer").ok(), None);
    }

    #[test]
    fn hashes_differ_per_token_and_match_tokends_context() {
        assert_ne!(hash(&token('a')).0, hash(&token('b')).0);
        let expected = blake3::derive_key(HASH_CONTEXT, token('a').as_bytes());
        assert_eq!(hash(&token('a')).0, expected);
    }

    #[test]
    fn required_scopes_are_checked_like_the_server() {
        assert!(check_required_scopes(&["read", "a.b:c/d-e_f"]).is_ok());
        let err = check_required_scopes(&["read", "no spaces"]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("invalid required_scopes[1]:"), "{}", err.message());
        let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        assert!(check_required_scopes(&many).unwrap_err().message().starts_with("invalid required_scopes:"));
        assert!(check_required_scopes(&["x".repeat(129)]).is_err());
    }
}
