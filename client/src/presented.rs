//! What a sibling is handed: a credential to parse, hash and check locally.
//!
//! The same rules tokend applies (its `token` and `spec` modules), so that a
//! cached answer is the answer the RPC would give: a token is
//! `<prefix>_<body><checksum>` with a CRC-32 checksum, presented bare or as
//! an HTTP header value `Bearer <token>` / `access_token <token>`; it is
//! identified by its blake3 hash (`derive_key` mode), never by its text.

use std::sync::LazyLock;

use tonic::Status;

/// Base62 characters of a token's random body.
const BODY_LEN: usize = 43;
/// Base62 characters of a token's checksum.
const CHECKSUM_LEN: usize = 6;
/// Longest token prefix.
const MAX_PREFIX_LEN: usize = 16;
/// Longest token.
const MAX_TOKEN_LEN: usize = MAX_PREFIX_LEN + 1 + BODY_LEN + CHECKSUM_LEN;
/// Most scopes a Verify may require.
const MAX_SCOPES: usize = 64;
/// Longest scope, in bytes.
const MAX_SCOPE_BYTES: usize = 128;

/// tokend's blake3 `derive_key` context (see `RecordUseRequest` in the proto).
const HASH_CONTEXT: &str = "tokend 2026-11-22 api token hash v1";

/// The context's key, hashed once: `derive_key` would hash the context
/// again on every call, and cloning a keyed `Hasher` copies its ~1.9 KB
/// state, where a fresh one from the key initialises only a few words.
static CONTEXT_KEY: LazyLock<[u8; 32]> = LazyLock::new(|| blake3::hazmat::hash_derive_key_context(HASH_CONTEXT));

/// A token's identity: what tokend stores, what the cache is keyed by and
/// what `RecordUse` reports.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenHash(pub [u8; 32]);

impl std::hash::Hash for TokenHash {
    /// blake3 output is uniformly distributed: eight of its bytes are as good
    /// as any hasher's digest of all 32 (see [`PassThrough`]).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

/// A hasher that keeps the one word [`TokenHash`] writes.
#[derive(Clone, Copy, Default)]
pub(crate) struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than TokenHash; fold them in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }
}

/// Builds [`PassThrough`] hashers.
pub(crate) type PassThroughBuilder = std::hash::BuildHasherDefault<PassThrough>;

/// The token text of a presented credential if it is well-formed (shape,
/// prefix, alphabet and checksum), or `None`: tokend would answer
/// `VERIFY_RESULT_MALFORMED`. Does not allocate.
pub(crate) fn parse(presented: &str) -> Option<&str> {
    let trimmed = presented.trim();
    let token = match trimmed.split_once(|c: char| c.is_ascii_whitespace()) {
        None => trimmed,
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("access_token") =>
        {
            rest.trim_start()
        }
        Some(_) => return None,
    };
    well_formed(token).then_some(token)
}

fn well_formed(token: &str) -> bool {
    let bytes = token.as_bytes();
    let fixed = BODY_LEN + CHECKSUM_LEN;
    if bytes.len() < fixed + 2 || bytes.len() > MAX_TOKEN_LEN {
        return false;
    }
    let split = bytes.len() - fixed - 1;
    let prefix = &bytes[..split];
    let prefix_ok =
        prefix[0].is_ascii_lowercase() && prefix.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if bytes[split] != b'_' || !prefix_ok || !bytes[split + 1..].iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let (signed, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    let presented = checksum.iter().fold(0u64, |n, &c| n * 62 + u64::from(base62_value(c)));
    presented == u64::from(crc32fast::hash(signed))
}

fn base62_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'Z' => c - b'A' + 10,
        _ => c - b'a' + 36,
    }
}

/// The blake3 hash tokend identifies `token` by.
pub(crate) fn hash(token: &str) -> TokenHash {
    let mut hasher = <blake3::Hasher as blake3::hazmat::HasherExt>::new_from_context_key(&CONTEXT_KEY);
    hasher.update(token.as_bytes());
    TokenHash(*hasher.finalize().as_bytes())
}

/// Refuses required scopes as tokend does: INVALID_ARGUMENT naming the field.
pub(crate) fn check_required_scopes<S: AsRef<str>>(scopes: &[S]) -> Result<(), Status> {
    if scopes.len() > MAX_SCOPES {
        return Err(Status::invalid_argument(format!("invalid required_scopes: at most {MAX_SCOPES} scopes")));
    }
    for (i, scope) in scopes.iter().enumerate() {
        let s = scope.as_ref();
        let ok = !s.is_empty()
            && s.len() <= MAX_SCOPE_BYTES
            && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"._:/-".contains(&c));
        if !ok {
            return Err(Status::invalid_argument(format!(
                "invalid required_scopes[{i}]: must match [A-Za-z0-9._:/-]{{1,128}}"
            )));
        }
    }
    Ok(())
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
        assert_eq!(parse(&t), Some(t.as_str()));
        assert_eq!(parse(&format!("  Bearer   {t} ")), Some(t.as_str()));
        assert_eq!(parse(&format!("access_token {t}")), Some(t.as_str()));
        assert_eq!(parse(&format!("Basic {t}")), None);
        let mut typo = t.clone().into_bytes();
        typo[10] = b'b';
        assert_eq!(parse(std::str::from_utf8(&typo).unwrap()), None, "checksum catches a typo");
        assert_eq!(parse(&t[..t.len() - 1]), None);
        assert_eq!(parse(&format!("T{}", &t[1..])), None, "upper-case prefix");
        assert_eq!(parse(""), None);
        assert_eq!(parse("Bearer"), None);
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
