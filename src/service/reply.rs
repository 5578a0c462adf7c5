//! Verify's answer, encoded straight from the index entry.
//!
//! A `pb::VerifyResponse` for a valid token takes about eight allocations
//! (id and owner as `String`s, the scope list and its strings, the label map
//! and its strings); the encoder copies them into the response body and the
//! handler frees them again. At 64 calls in flight on two cores, allocation
//! was the largest part of what Verify costs over a call that does nothing
//! (README, "Verify vs Check"). A [`VerifyReply`] holds the verdict, which
//! holds the entry, and writes the same protobuf fields from it directly.
//!
//! The encoding follows proto3 as prost writes it: scalar fields at their
//! default are left out, repeated and map fields write one record per
//! element. Map entries come in key order (the record keeps labels sorted);
//! protobuf gives map order no meaning. The unit tests decode every shape of
//! reply with prost and compare it with the message built the plain way.

use prost::{
    DecodeError, Message,
    bytes::{Buf, BufMut},
    encoding::{DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len, skip_field},
};

use crate::{
    pb,
    service::convert,
    verify::{Outcome, Verdict},
};

/// Verify's response: the verdict, encoded as a `tokend.v1.VerifyResponse`.
#[derive(Debug)]
pub struct VerifyReply(Verdict);

// Field numbers of tokend.v1.VerifyResponse.
const VALID: u32 = 1;
const RESULT: u32 = 2;
const TOKEN_ID: u32 = 3;
const OWNER: u32 = 4;
const SCOPES: u32 = 5;
const LABELS: u32 = 6;
const EXPIRE_TIME: u32 = 7;
// Of a map entry, and of google.protobuf.Timestamp.
const KEY: u32 = 1;
const VALUE: u32 = 2;
const SECONDS: u32 = 1;
const NANOS: u32 = 2;

impl VerifyReply {
    /// The reply for `verdict`, which must not be [`Outcome::Stale`] (a
    /// stale replica answers with an error status, not a result).
    pub fn new(verdict: Verdict) -> VerifyReply {
        debug_assert!(verdict.outcome != Outcome::Stale);
        VerifyReply(verdict)
    }

    /// The same answer as a generated message (for the generated service
    /// trait, and as the reference the encoding is tested against).
    pub fn to_message(&self) -> pb::VerifyResponse {
        let mut response =
            pb::VerifyResponse { valid: self.valid(), result: result(self.0.outcome).into(), ..Default::default() };
        if let Some(entry) = &self.0.entry {
            response.token_id = entry.id().to_string();
            if response.valid {
                response.owner = entry.owner().to_string();
                response.scopes = entry.scopes().to_vec();
                response.labels = entry.labels().iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                response.expire_time = entry.expire_time().map(convert::timestamp);
            }
        }
        response
    }

    fn valid(&self) -> bool {
        self.0.outcome == Outcome::Ok
    }

    /// Owner, scopes, labels and expiry are told only for a valid token.
    fn details(&self) -> Option<&crate::index::Entry> {
        self.0.entry.as_deref().filter(|_| self.valid())
    }
}

impl Message for VerifyReply {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.valid() {
            encode_key(VALID, WireType::Varint, buf);
            encode_varint(1, buf);
        }
        let result = i32::from(result(self.0.outcome));
        if result != 0 {
            encode_key(RESULT, WireType::Varint, buf);
            encode_varint(result as u64, buf);
        }
        if let Some(entry) = &self.0.entry {
            put_bytes(TOKEN_ID, &entry.id().to_ascii(), buf);
        }
        let Some(r) = self.details() else { return };
        if !r.owner().is_empty() {
            put_bytes(OWNER, r.owner().as_bytes(), buf);
        }
        for scope in r.scopes().iter() {
            put_bytes(SCOPES, scope.as_bytes(), buf);
        }
        for (k, v) in r.labels().iter() {
            encode_key(LABELS, WireType::LengthDelimited, buf);
            encode_varint(label_len(k, v) as u64, buf);
            put_nonempty(KEY, k.as_bytes(), buf);
            put_nonempty(VALUE, v.as_bytes(), buf);
        }
        if let Some(t) = r.expire_time().map(convert::timestamp) {
            encode_key(EXPIRE_TIME, WireType::LengthDelimited, buf);
            encode_varint(timestamp_len(&t) as u64, buf);
            if t.seconds != 0 {
                encode_key(SECONDS, WireType::Varint, buf);
                encode_varint(t.seconds as u64, buf);
            }
            if t.nanos != 0 {
                encode_key(NANOS, WireType::Varint, buf);
                encode_varint(t.nanos as u64, buf);
            }
        }
    }

    fn encoded_len(&self) -> usize {
        let mut len = 0;
        if self.valid() {
            len += key_len(VALID) + 1;
        }
        let result = i32::from(result(self.0.outcome));
        if result != 0 {
            len += key_len(RESULT) + encoded_len_varint(result as u64);
        }
        if self.0.entry.is_some() {
            len += bytes_len(TOKEN_ID, 36);
        }
        let Some(r) = self.details() else { return len };
        if !r.owner().is_empty() {
            len += bytes_len(OWNER, r.owner().len());
        }
        len += r.scopes().iter().map(|s| bytes_len(SCOPES, s.len())).sum::<usize>();
        len += r.labels().iter().map(|(k, v)| bytes_len(LABELS, label_len(k, v))).sum::<usize>();
        if let Some(t) = r.expire_time().map(convert::timestamp) {
            len += bytes_len(EXPIRE_TIME, timestamp_len(&t));
        }
        len
    }

    /// A reply is only ever encoded; decoding one skips every field.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn clear(&mut self) {}
}

/// The wire value of an outcome.
pub fn result(o: Outcome) -> pb::VerifyResult {
    match o {
        Outcome::Ok => pb::VerifyResult::Ok,
        Outcome::Malformed => pb::VerifyResult::Malformed,
        Outcome::Unknown => pb::VerifyResult::Unknown,
        Outcome::Expired => pb::VerifyResult::Expired,
        Outcome::Revoked => pb::VerifyResult::Revoked,
        Outcome::InsufficientScope => pb::VerifyResult::InsufficientScope,
        Outcome::NotYetValid => pb::VerifyResult::NotYetValid,
        Outcome::IpNotAllowed => pb::VerifyResult::IpNotAllowed,
        // Answered as UNAVAILABLE before a result is built.
        Outcome::Stale => pb::VerifyResult::Unspecified,
    }
}

/// A length-delimited field: key, length, bytes.
fn put_bytes(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

/// A singular string field, left out when empty as proto3 does.
fn put_nonempty(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    if !bytes.is_empty() {
        put_bytes(tag, bytes, buf);
    }
}

fn bytes_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn nonempty_len(tag: u32, len: usize) -> usize {
    if len == 0 { 0 } else { bytes_len(tag, len) }
}

/// The length of one map entry's body.
fn label_len(k: &str, v: &str) -> usize {
    nonempty_len(KEY, k.len()) + nonempty_len(VALUE, v.len())
}

/// The length of a google.protobuf.Timestamp's body.
fn timestamp_len(t: &prost_types::Timestamp) -> usize {
    let seconds = if t.seconds != 0 { key_len(SECONDS) + encoded_len_varint(t.seconds as u64) } else { 0 };
    let nanos = if t.nanos != 0 { key_len(NANOS) + encoded_len_varint(t.nanos as u64) } else { 0 };
    seconds + nanos
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::{
        clock::Time,
        id::IdGenerator,
        index::Entry,
        record::{Labels, Scopes, TokenRecord},
        token::TokenHash,
    };

    fn record(owner: &str, scopes: &[&str], labels: &[(&str, &str)], expire_time: Option<Time>) -> TokenRecord {
        TokenRecord {
            id: IdGenerator::default().next(Time(1_750_000_000_000_000_000)),
            hash: TokenHash([7; 32]),
            hint: "tkd_…abcd".into(),
            name: "ci".into(),
            owner: owner.into(),
            scopes: Scopes::from_iter(scopes.iter().map(|s| (*s).to_owned())),
            labels: Labels::from_iter(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))),
            create_time: Time(1_750_000_000_000_000_000),
            ttl: Some(Duration::from_secs(3600)),
            expire_time,
            not_before: None,
            allowed_cidrs: Default::default(),
            update_time: Time(1_750_000_000_000_000_000),
            revoke_time: None,
            revoke_reason: "".into(),
            rotated_from: None,
            rotated_to: None,
            version: 1,
        }
    }

    fn assert_encodes_as_message(reply: &VerifyReply) {
        let bytes = reply.encode_to_vec();
        assert_eq!(bytes.len(), reply.encoded_len(), "encoded_len agrees with the bytes written");
        let decoded = pb::VerifyResponse::decode(bytes.as_slice()).expect("prost decodes the reply");
        assert_eq!(decoded, reply.to_message());
    }

    #[test]
    fn every_shape_of_reply_decodes_to_the_message_built_field_by_field() {
        let records = [
            record("team-a", &["orders:read", "orders:write"], &[("env", "prod"), ("team", "a")], None),
            // Timestamps with zero nanos, zero seconds and before the epoch;
            // an empty label value; a long owner (a two-byte length).
            record("o", &["s"], &[("k", "")], Some(Time(1_800_000_000_000_000_000))),
            record(&"x".repeat(300), &[], &[], Some(Time(123))),
            record("o", &["a"], &[], Some(Time(-1_500_000_000))),
        ];
        for r in records {
            let entry = Arc::new(Entry::for_test(r));
            for outcome in [
                Outcome::Ok,
                Outcome::Unknown,
                Outcome::Expired,
                Outcome::Revoked,
                Outcome::InsufficientScope,
                Outcome::NotYetValid,
                Outcome::IpNotAllowed,
            ] {
                let reply = VerifyReply::new(Verdict { outcome, entry: Some(entry.clone()) });
                assert_encodes_as_message(&reply);
                if outcome != Outcome::Ok {
                    assert!(reply.to_message().owner.is_empty(), "details only for a valid token");
                }
            }
        }
        for outcome in [Outcome::Malformed, Outcome::Unknown] {
            assert_encodes_as_message(&VerifyReply::new(Verdict { outcome, entry: None }));
        }
    }

    #[test]
    fn a_valid_reply_carries_the_records_fields() {
        let r = record("team-a", &["orders:read"], &[("env", "prod")], Some(Time(1_800_000_000_500_000_000)));
        let id = r.id.to_string();
        let reply = VerifyReply::new(Verdict { outcome: Outcome::Ok, entry: Some(Arc::new(Entry::for_test(r))) });
        let m = pb::VerifyResponse::decode(reply.encode_to_vec().as_slice()).unwrap();
        assert!(m.valid);
        assert_eq!(m.result(), pb::VerifyResult::Ok);
        assert_eq!(m.token_id, id);
        assert_eq!(m.owner, "team-a");
        assert_eq!(m.scopes, ["orders:read"]);
        assert_eq!(m.labels.get("env").map(String::as_str), Some("prod"));
        assert_eq!(m.expire_time, Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: 500_000_000 }));
    }
}
