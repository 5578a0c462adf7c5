//! Conversions between protobuf messages and domain types.

use std::time::Duration;

use crate::{clock::Time, error::Error, id::TokenId, index::Entry, pb, record::Status};

/// A protobuf timestamp for `t`.
pub fn timestamp(t: Time) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.0.div_euclid(1_000_000_000), nanos: t.0.rem_euclid(1_000_000_000) as i32 }
}

/// A non-negative duration from a request field; absent = zero.
pub fn duration(field: &str, d: Option<&prost_types::Duration>) -> Result<Duration, Error> {
    let Some(d) = d else { return Ok(Duration::ZERO) };
    if d.seconds < 0 || d.nanos < 0 {
        return Err(Error::invalid(field, "must not be negative"));
    }
    if d.nanos >= 1_000_000_000 {
        return Err(Error::invalid(field, "nanos must be below 1,000,000,000"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// A token id from a request field.
pub fn token_id(field: &str, s: &str) -> Result<TokenId, Error> {
    s.parse().map_err(|e: crate::id::InvalidId| Error::invalid(field, e.to_string()))
}

/// The protobuf status for a domain status.
pub fn token_status(s: Status) -> pb::TokenStatus {
    match s {
        Status::Active => pb::TokenStatus::Active,
        Status::Expired => pb::TokenStatus::Expired,
        Status::Revoked => pb::TokenStatus::Revoked,
    }
}

/// The domain status filter for a protobuf one (`None` = any).
pub fn status_filter(field: &str, value: i32) -> Result<Option<Status>, Error> {
    match pb::TokenStatus::try_from(value) {
        Ok(pb::TokenStatus::Unspecified) => Ok(None),
        Ok(pb::TokenStatus::Active) => Ok(Some(Status::Active)),
        Ok(pb::TokenStatus::Expired) => Ok(Some(Status::Expired)),
        Ok(pb::TokenStatus::Revoked) => Ok(Some(Status::Revoked)),
        Err(_) => Err(Error::invalid(field, format!("unknown token status {value}"))),
    }
}

/// The protobuf view of a token at `now`.
pub fn token(entry: &Entry, now: Time) -> pb::Token {
    let e = entry;
    pb::Token {
        id: e.id().to_string(),
        name: e.name().to_owned(),
        owner: e.owner().to_string(),
        scopes: e.scopes().to_vec(),
        labels: e.labels().iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        status: token_status(e.status_at(now)).into(),
        hint: e.hint().to_owned(),
        create_time: Some(timestamp(e.create_time())),
        expire_time: e.expire_time().map(timestamp),
        last_used_time: e.last_used().map(timestamp),
        revoke_time: e.revoke_time().map(timestamp),
        revoke_reason: e.revoke_reason().to_owned(),
        rotated_from: e.rotated_from().map(|id| id.to_string()).unwrap_or_default(),
        rotated_to: e.rotated_to().map(|id| id.to_string()).unwrap_or_default(),
        not_before: e.not_before().map(timestamp),
        allowed_cidrs: e.allowed_cidrs().iter().map(|c| c.to_string()).collect(),
        update_time: Some(timestamp(e.update_time())),
    }
}

/// A time from a request's timestamp field; nanos must be 0-999,999,999
/// and the time within ±292 years of 1970 (what tokend can represent).
pub fn time(field: &str, t: &prost_types::Timestamp) -> Result<Time, Error> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Error::invalid(field, "nanos must be 0-999,999,999"));
    }
    t.seconds
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(i64::from(t.nanos)))
        .map(Time)
        .ok_or_else(|| Error::invalid(field, "is out of range (years 1678-2262)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_handle_times_before_the_epoch() {
        assert_eq!(timestamp(Time(-1)), prost_types::Timestamp { seconds: -1, nanos: 999_999_999 });
        assert_eq!(timestamp(Time(1_500_000_001)), prost_types::Timestamp { seconds: 1, nanos: 500_000_001 });
    }

    #[test]
    fn request_times_are_checked() {
        let ts = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        assert_eq!(time("t", &ts(1, 5)).unwrap(), Time(1_000_000_005));
        assert_eq!(time("t", &ts(-1, 999_999_999)).unwrap(), Time(-1));
        for bad in [ts(0, -1), ts(0, 1_000_000_000), ts(i64::MAX / 1_000_000_000 + 1, 0), ts(i64::MIN, 0)] {
            assert!(matches!(time("t", &bad), Err(Error::InvalidArgument { field, .. }) if field == "t"), "{bad:?}");
        }
    }

    #[test]
    fn durations_reject_negative_and_denormal_values() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(duration("ttl", None).unwrap(), Duration::ZERO);
        assert_eq!(duration("ttl", Some(&d(3, 5))).unwrap(), Duration::new(3, 5));
        for bad in [d(-1, 0), d(0, -1), d(1, 1_000_000_000)] {
            assert!(matches!(duration("ttl", Some(&bad)), Err(Error::InvalidArgument { field, .. }) if field == "ttl"));
        }
    }
}
