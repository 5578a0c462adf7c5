//! The stored form of a [`TokenRecord`], shared by every backend: a private
//! protobuf message, compact, to which new fields can be added without a
//! migration. The public API's `Token` message is a different,
//! presentation type.

use std::{collections::BTreeMap, time::Duration};

use prost::Message as _;

use super::StoreError;
use crate::{
    cidr::{Allowlist, Cidr},
    clock::Time,
    id::TokenId,
    record::TokenRecord,
    token::TokenHash,
};

/// The stored form of a [`TokenRecord`].
#[derive(Clone, PartialEq, prost::Message)]
struct StoredToken {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    hash: Vec<u8>,
    #[prost(string, tag = "3")]
    hint: String,
    #[prost(string, tag = "4")]
    name: String,
    #[prost(string, tag = "5")]
    owner: String,
    #[prost(string, repeated, tag = "6")]
    scopes: Vec<String>,
    #[prost(btree_map = "string, string", tag = "7")]
    labels: BTreeMap<String, String>,
    #[prost(int64, tag = "8")]
    create_time: i64,
    #[prost(uint64, optional, tag = "9")]
    ttl_nanos: Option<u64>,
    #[prost(int64, optional, tag = "10")]
    expire_time: Option<i64>,
    #[prost(int64, optional, tag = "11")]
    revoke_time: Option<i64>,
    #[prost(string, tag = "12")]
    revoke_reason: String,
    #[prost(bytes = "vec", optional, tag = "13")]
    rotated_from: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "14")]
    rotated_to: Option<Vec<u8>>,
    /// Absent (0) in records written before versions existed.
    #[prost(uint64, tag = "15")]
    version: u64,
    #[prost(int64, optional, tag = "16")]
    not_before: Option<i64>,
    /// Canonical CIDR text, as `Cidr` prints it.
    #[prost(string, repeated, tag = "17")]
    allowed_cidrs: Vec<String>,
    /// Absent in records written before updates existed: the create time.
    #[prost(int64, optional, tag = "18")]
    update_time: Option<i64>,
}

pub(super) fn encode(r: &TokenRecord) -> Vec<u8> {
    StoredToken {
        id: r.id.to_bytes().to_vec(),
        hash: r.hash.0.to_vec(),
        hint: r.hint.to_string(),
        name: r.name.to_string(),
        owner: r.owner.to_string(),
        scopes: r.scopes.to_vec(),
        labels: r.labels.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        create_time: r.create_time.0,
        ttl_nanos: r.ttl.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        expire_time: r.expire_time.map(|t| t.0),
        revoke_time: r.revoke_time.map(|t| t.0),
        revoke_reason: r.revoke_reason.to_string(),
        rotated_from: r.rotated_from.map(|id| id.to_bytes().to_vec()),
        rotated_to: r.rotated_to.map(|id| id.to_bytes().to_vec()),
        version: r.version,
        not_before: r.not_before.map(|t| t.0),
        allowed_cidrs: r.allowed_cidrs.iter().map(|c| c.to_string()).collect(),
        update_time: (r.update_time != r.create_time).then_some(r.update_time.0),
    }
    .encode_to_vec()
}

pub(super) fn decode(key: &[u8], value: &[u8]) -> Result<TokenRecord, StoreError> {
    let corrupt = |message: &str| StoreError::Corrupt { key: hex(key), message: message.to_owned() };
    let s = StoredToken::decode(value).map_err(|e| corrupt(&e.to_string()))?;
    let id_of = |b: &[u8]| -> Result<TokenId, StoreError> {
        TokenId::from_bytes(b.try_into().map_err(|_| corrupt("bad id"))?).map_err(|_| corrupt("bad id"))
    };
    let id = id_of(&s.id)?;
    if id.to_bytes() != key {
        return Err(corrupt("id does not match key"));
    }
    Ok(TokenRecord {
        id,
        hash: TokenHash(s.hash.as_slice().try_into().map_err(|_| corrupt("bad hash"))?),
        hint: s.hint.into(),
        name: s.name.into(),
        owner: s.owner.into(),
        scopes: s.scopes.into_iter().collect(),
        labels: s.labels.into_iter().collect(),
        create_time: Time(s.create_time),
        ttl: s.ttl_nanos.map(Duration::from_nanos),
        expire_time: s.expire_time.map(Time),
        not_before: s.not_before.map(Time),
        allowed_cidrs: Allowlist::new(
            s.allowed_cidrs
                .iter()
                .map(|c| c.parse::<Cidr>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| corrupt(&e.to_string()))?,
        ),
        update_time: Time(s.update_time.unwrap_or(s.create_time)),
        revoke_time: s.revoke_time.map(Time),
        revoke_reason: s.revoke_reason.into(),
        rotated_from: s.rotated_from.as_deref().map(id_of).transpose()?,
        rotated_to: s.rotated_to.as_deref().map(id_of).transpose()?,
        version: s.version,
    })
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{id::IdGenerator, token::Secret};

    #[test]
    fn records_round_trip_through_encoding() {
        let ids = IdGenerator::default();
        let mut r = crate::record::sample(ids.next(Time(1_700_000_000_000_000_000)), &Secret::generate("tk"), "o");
        r.scopes = ["a:read".to_string(), "b".to_string()].into_iter().collect();
        r.labels = [("env".to_string(), "prod".to_string())].into_iter().collect();
        r.ttl = Some(Duration::from_secs(3600));
        r.expire_time = Some(Time(1_700_003_600_000_000_000));
        r.rotated_from = Some(ids.next(Time(0)));
        assert_eq!(decode(&r.id.to_bytes(), &encode(&r)).unwrap(), r);
        // The policy fields of issue #12.
        r.not_before = Some(Time(1_700_000_100_000_000_000));
        r.allowed_cidrs = Allowlist::new(["10.0.0.0/8", "2001:db8::/32"].map(|c| c.parse().unwrap()));
        r.update_time = Time(1_700_000_200_000_000_000);
        assert_eq!(decode(&r.id.to_bytes(), &encode(&r)).unwrap(), r);
        assert!(matches!(decode(&[0; 16], &encode(&r)), Err(StoreError::Corrupt { .. })));
        assert!(matches!(decode(&r.id.to_bytes(), b"\xff\xff\xff"), Err(StoreError::Corrupt { .. })));
    }
}
