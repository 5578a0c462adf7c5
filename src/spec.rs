//! What an operator asks for, and the limits it must respect.
//!
//! Every check names the offending field the way the caller wrote it, so an
//! INVALID_ARGUMENT says exactly what to fix.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    cidr::{Allowlist, Cidr, MAX_CIDRS},
    clock::Time,
    error::Error,
    record::Labels,
};

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
    /// Time to live; `None` = never expires (or the `--default-ttl`).
    pub ttl: Option<Duration>,
    /// Not valid before this time.
    pub not_before: Option<Time>,
    /// The networks the token may be presented from; empty = anywhere.
    pub allowed_cidrs: Allowlist,
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
        check_name("name", &name)?;
        check_name("owner", &owner)?;
        let scopes = check_scopes(scopes)?;
        let labels = check_labels(labels)?;
        let ttl = check_duration("ttl", ttl)?;
        Ok(TokenSpec { name, owner, scopes, labels, ttl, not_before: None, allowed_cidrs: Allowlist::default() })
    }
}

/// Checks a name or owner: 1-128 bytes, no control characters.
pub fn check_name<'a>(field: &str, value: &'a str) -> Result<&'a str, Error> {
    check_text(field, value, 1, MAX_NAME_BYTES).map(|()| value)
}

/// Checks scopes (at most 64, each `[A-Za-z0-9._:/-]{1,128}`) and removes
/// duplicates, keeping the order given.
pub fn check_scopes(scopes: Vec<String>) -> Result<Vec<String>, Error> {
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
    Ok(unique)
}

/// Checks labels: at most 64, keys 1-63 bytes, values at most 256 bytes.
pub fn check_labels(labels: BTreeMap<String, String>) -> Result<Labels, Error> {
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
    Ok(labels.into_iter().collect())
}

/// The expiry policy: `--max-ttl` and `--default-ttl`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Longest lifetime of a token issued or rotated; `None` = no limit.
    max: Option<Duration>,
    /// The TTL of an Issue that gives none; `None` = such tokens never expire.
    default: Option<Duration>,
}

impl TtlPolicy {
    /// The policy of `--max-ttl max` and `--default-ttl default` (zero =
    /// unset); a default longer than the max is refused, naming both flags.
    pub fn new(max: Duration, default: Duration) -> Result<TtlPolicy, String> {
        for (flag, d) in [("--max-ttl", max), ("--default-ttl", default)] {
            if d > MAX_DURATION {
                return Err(format!("{flag} {d:?} is longer than 100 years, the longest ttl a token may have"));
            }
        }
        let (max, default) = ((!max.is_zero()).then_some(max), (!default.is_zero()).then_some(default));
        if let (Some(max), Some(default)) = (max, default)
            && default > max
        {
            return Err(format!("--default-ttl {default:?} is longer than --max-ttl {max:?}"));
        }
        Ok(TtlPolicy { max, default })
    }

    /// The TTL of a token issued with `asked` (`None`: absent or zero).
    pub fn issue_ttl(&self, asked: Option<Duration>) -> Result<Option<Duration>, Error> {
        match (asked.or(self.default), self.max) {
            (None, Some(max)) => {
                Err(Error::invalid("ttl", format!("is required: every token must expire within --max-ttl ({max:?})")))
            }
            (Some(ttl), Some(max)) if ttl > max => {
                Err(Error::invalid("ttl", format!("{ttl:?} is longer than --max-ttl ({max:?})")))
            }
            (ttl, _) => Ok(ttl),
        }
    }

    /// `ttl` capped at the max (a rotation's successor).
    pub fn cap(&self, ttl: Option<Duration>) -> Option<Duration> {
        match (ttl, self.max) {
            (Some(ttl), Some(max)) => Some(ttl.min(max)),
            (ttl, max) => ttl.or(max),
        }
    }

    /// The latest expiry of a token created or changed at `now`.
    pub fn latest_expiry(&self, now: Time) -> Option<Time> {
        self.max.map(|max| now.saturating_add(max))
    }
}

/// Checks a duration against [`MAX_DURATION`]; zero becomes `None`.
pub fn check_duration(field: &str, d: Duration) -> Result<Option<Duration>, Error> {
    if d > MAX_DURATION {
        return Err(Error::invalid(field, "must be at most 100 years"));
    }
    Ok((!d.is_zero()).then_some(d))
}

/// Checks an IP allowlist: at most [`MAX_CIDRS`] addresses or CIDR
/// networks, each without host bits past its prefix.
pub fn check_cidrs(field: &str, cidrs: &[String]) -> Result<Allowlist, Error> {
    if cidrs.len() > MAX_CIDRS {
        return Err(Error::invalid(field, format!("at most {MAX_CIDRS} entries, got {}", cidrs.len())));
    }
    let parsed = cidrs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            // `{c:?}` quotes and escapes the entry: it may hold control characters.
            c.parse::<Cidr>().map_err(|e| Error::invalid(format!("{field}[{i}]"), format!("{c:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Allowlist::new(parsed))
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
    fn allowlists_name_the_bad_entry() {
        let list = check_cidrs("allowed_cidrs", &["10.0.0.0/8".into(), "::1".into()]).unwrap();
        assert_eq!(list.iter().map(|c| c.to_string()).collect::<Vec<_>>(), ["10.0.0.0/8", "::1/128"]);
        let field = |cidrs: &[&str]| match check_cidrs(
            "allowed_cidrs",
            &cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        ) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        assert_eq!(field(&["10.0.0.0/8", "10.1.2.3/8"]), "allowed_cidrs[1]");
        assert_eq!(field(&["nonsense"]), "allowed_cidrs[0]");
        let many: Vec<String> = (0..65).map(|i| format!("10.0.0.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(field(&many), "allowed_cidrs");
    }

    #[test]
    fn the_expiry_policy_applies_its_default_and_its_limit() {
        let day = Duration::from_secs(86_400);
        let none = TtlPolicy::default();
        assert_eq!(none.issue_ttl(None).unwrap(), None);
        assert_eq!(none.latest_expiry(Time(0)), None);
        let both = TtlPolicy::new(30 * day, 7 * day).unwrap();
        assert_eq!(both.issue_ttl(None).unwrap(), Some(7 * day));
        assert_eq!(both.issue_ttl(Some(30 * day)).unwrap(), Some(30 * day));
        assert!(matches!(both.issue_ttl(Some(31 * day)), Err(Error::InvalidArgument { field, .. }) if field == "ttl"));
        assert_eq!(both.latest_expiry(Time(0)), Some(Time(0).saturating_add(30 * day)));
        let max_only = TtlPolicy::new(day, Duration::ZERO).unwrap();
        assert!(matches!(max_only.issue_ttl(None), Err(Error::InvalidArgument { field, .. }) if field == "ttl"));
        let default_only = TtlPolicy::new(Duration::ZERO, day).unwrap();
        assert_eq!(default_only.issue_ttl(None).unwrap(), Some(day));
        assert_eq!(default_only.issue_ttl(Some(400 * day)).unwrap(), Some(400 * day));
        let err = TtlPolicy::new(day, 2 * day).unwrap_err();
        assert!(err.contains("--default-ttl") && err.contains("--max-ttl"), "{err}");
        let too_long = MAX_DURATION + Duration::from_secs(1);
        assert!(TtlPolicy::new(Duration::ZERO, too_long).unwrap_err().contains("--default-ttl"));
        assert!(TtlPolicy::new(too_long, Duration::ZERO).unwrap_err().contains("--max-ttl"));
    }

    #[test]
    fn reason_limits() {
        assert!(check_reason("").is_ok());
        assert!(check_reason(&"r".repeat(512)).is_ok());
        assert!(check_reason(&"r".repeat(513)).is_err());
        assert!(check_reason("a\u{0}").is_err());
    }
}
