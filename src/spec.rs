//! What an operator asks for, and the limits it must respect.
//!
//! Every check names the offending field the way the caller wrote it, so an
//! INVALID_ARGUMENT says exactly what to fix.

use std::{collections::BTreeMap, time::Duration};

use crate::{error::Error, record::Labels};

/// Longest name or owner, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Most scopes on one token, and longest scope: the rules a sibling's cache
/// applies too, so they live with the token format.
pub use tokend_client::format::{MAX_SCOPE_BYTES, MAX_SCOPES};
/// Most labels on one token.
pub const MAX_LABELS: usize = 64;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY_BYTES: usize = 63;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 256;
/// Longest revoke reason, in bytes.
pub const MAX_REASON_BYTES: usize = 512;
/// Longest TTL or grace period: 100 years of 365.25 days.
pub const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000);

/// A validated request for a new token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// Human-readable name.
    pub name: String,
    /// Owner.
    pub owner: String,
    /// Scopes, deduplicated, in the order given.
    pub scopes: Vec<String>,
    /// Labels.
    pub labels: Labels,
    /// Time to live; `None` = never expires.
    pub ttl: Option<Duration>,
}

impl TokenSpec {
    /// Validates raw request fields into a spec. `ttl` of zero means "never".
    pub fn new(
        name: String,
        owner: String,
        scopes: Vec<String>,
        labels: BTreeMap<String, String>,
        ttl: Duration,
    ) -> Result<TokenSpec, Error> {
        check_text("name", &name, 1, MAX_NAME_BYTES)?;
        check_text("owner", &owner, 1, MAX_NAME_BYTES)?;
        if scopes.len() > MAX_SCOPES {
            return Err(Error::invalid("scopes", format!("at most {MAX_SCOPES} scopes, got {}", scopes.len())));
        }
        let mut unique: Vec<String> = Vec::with_capacity(scopes.len());
        for (i, scope) in scopes.into_iter().enumerate() {
            check_scope(&format!("scopes[{i}]"), &scope)?;
            if !unique.contains(&scope) {
                unique.push(scope);
            }
        }
        if labels.len() > MAX_LABELS {
            return Err(Error::invalid("labels", format!("at most {MAX_LABELS} labels, got {}", labels.len())));
        }
        for (key, value) in &labels {
            // The key itself may be what is wrong: quote it with escapes so a
            // control character cannot forge log lines.
            let field = format!("labels[{}]", key.escape_debug());
            check_text(&field, key, 1, MAX_LABEL_KEY_BYTES)?;
            check_text(&field, value, 0, MAX_LABEL_VALUE_BYTES)?;
        }
        let ttl = check_duration("ttl", ttl)?;
        Ok(TokenSpec { name, owner, scopes: unique, labels: labels.into_iter().collect(), ttl })
    }
}

/// Checks a duration against [`MAX_DURATION`]; zero becomes `None`.
pub fn check_duration(field: &str, d: Duration) -> Result<Option<Duration>, Error> {
    if d > MAX_DURATION {
        return Err(Error::invalid(field, "must be at most 100 years"));
    }
    Ok((!d.is_zero()).then_some(d))
}

/// Checks a revoke reason.
pub fn check_reason(reason: &str) -> Result<(), Error> {
    check_text("reason", reason, 0, MAX_REASON_BYTES)
}

/// Checks a scope given to Verify or Issue: `[A-Za-z0-9._:/-]{1,128}`.
pub fn check_scope(field: &str, scope: &str) -> Result<(), Error> {
    if tokend_client::format::is_scope(scope) {
        Ok(())
    } else {
        Err(Error::invalid(field, "must match [A-Za-z0-9._:/-]{1,128}"))
    }
}

fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), Error> {
    if value.len() < min || value.len() > max {
        return Err(Error::invalid(field, format!("must be {min}-{max} bytes, got {}", value.len())));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        name: &str,
        owner: &str,
        scopes: &[&str],
        labels: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<TokenSpec, Error> {
        TokenSpec::new(
            name.into(),
            owner.into(),
            scopes.iter().map(|s| s.to_string()).collect(),
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ttl,
        )
    }

    fn field_of(r: Result<TokenSpec, Error>) -> String {
        match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_limits_exactly() {
        let name = "n".repeat(128);
        let scopes: Vec<String> = (0..64).map(|i| format!("s{i}")).collect();
        let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let key = "k".repeat(63);
        let value = "v".repeat(256);
        let s = spec(&name, &name, &scopes, &[(&key, &value)], MAX_DURATION).unwrap();
        assert_eq!(s.scopes.len(), 64);
        assert_eq!(s.ttl, Some(MAX_DURATION));
        assert_eq!(spec("a", "b", &[], &[], Duration::ZERO).unwrap().ttl, None);
    }

    #[test]
    fn names_the_bad_field() {
        let d = Duration::ZERO;
        assert_eq!(field_of(spec("", "o", &[], &[], d)), "name");
        assert_eq!(field_of(spec(&"n".repeat(129), "o", &[], &[], d)), "name");
        assert_eq!(field_of(spec("a\u{7}b", "o", &[], &[], d)), "name");
        assert_eq!(field_of(spec("n", "", &[], &[], d)), "owner");
        assert_eq!(field_of(spec("n", "o\n", &[], &[], d)), "owner");
        assert_eq!(field_of(spec("n", "o", &["ok", "bad scope"], &[], d)), "scopes[1]");
        assert_eq!(field_of(spec("n", "o", &[""], &[], d)), "scopes[0]");
        let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(field_of(spec("n", "o", &many, &[], d)), "scopes");
        assert_eq!(field_of(spec("n", "o", &[&"s".repeat(129)], &[], d)), "scopes[0]");
        assert_eq!(field_of(spec("n", "o", &[], &[(&"k".repeat(64), "v")], d)), format!("labels[{}]", "k".repeat(64)));
        assert_eq!(field_of(spec("n", "o", &[], &[("k", &"v".repeat(257))], d)), "labels[k]");
        assert_eq!(field_of(spec("n", "o", &[], &[("", "v")], d)), "labels[]");
        assert_eq!(field_of(spec("n", "o", &[], &[("a\nb", "v")], d)), "labels[a\\nb]");
        assert_eq!(field_of(spec("n", "o", &[], &[], MAX_DURATION + Duration::from_nanos(1))), "ttl");
    }

    #[test]
    fn scopes_are_deduplicated_in_order() {
        let s = spec("n", "o", &["b", "a", "b"], &[], Duration::ZERO).unwrap();
        assert_eq!(s.scopes, vec!["b", "a"]);
    }

    #[test]
    fn reason_limits() {
        assert!(check_reason("").is_ok());
        assert!(check_reason(&"r".repeat(512)).is_ok());
        assert!(check_reason(&"r".repeat(513)).is_err());
        assert!(check_reason("a\u{0}").is_err());
    }
}
