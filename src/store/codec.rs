//! The stored form of a [`TokenRecord`], shared by every backend: a private
//! protobuf message, compact, to which new fields can be added without a
//! migration. The public API's `Token` message is a different,
//! presentation type.
//!
//! Records are written with prost's generated message ([`encode`]) and read
//! by a reader of the wire format that borrows from the stored bytes: one
//! record alone with [`decode`], every record at start-up with a
//! [`Decoder`], which shares what records repeat as it reads.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Range,
    sync::Arc,
    time::Duration,
};

use prost::Message as _;

use super::StoreError;
use crate::{
    cidr::{Allowlist, Cidr},
    clock::Time,
    id::TokenId,
    intern::Interner,
    record::{Labels, Scopes, TokenRecord},
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

/// Reads stored records, sharing what they repeat.
///
/// Start-up reads every record once, so decoding is most of its cost at ten
/// million tokens. This decoder reads the wire format in place rather than
/// through a generated message (which allocates every string and list, to
/// be copied and freed again), and it remembers the stored bytes of each
/// scope list, label map and allowlist it has seen together with their
/// shared copy: a record repeating one costs a hash of a few bytes and no
/// allocation. The owner is looked up by the borrowed name. What it shared
/// is handed to the index with [`Decoder::into_interner`].
#[derive(Debug, Default)]
pub struct Decoder {
    interner: Interner,
    scopes: Seen<Scopes>,
    labels: Seen<Labels>,
    allowlists: Seen<Allowlist>,
}

impl Decoder {
    /// The record stored under `key` as `value`, its owner, scopes, labels
    /// and allowlist shared with the records decoded before.
    pub(crate) fn decode(&mut self, key: &[u8], value: &[u8]) -> Result<TokenRecord, StoreError> {
        let fields = Fields::parse(key, value)?;
        let Decoder { interner, scopes, labels, allowlists } = self;
        let owner = interner.owner(fields.owner);
        let scopes = scopes.get(&fields.scopes, || Ok(interner.scopes(fields.scope_list()?)))?;
        let labels = labels.get(&fields.labels, || Ok(interner.labels(fields.label_map()?)))?;
        let cidrs = allowlists.get(&fields.cidrs, || Ok(interner.allowlist(fields.allowlist()?)))?;
        fields.record(owner, scopes, labels, cidrs)
    }

    /// The shared copies, for the index built from the decoded records.
    pub fn into_interner(self) -> Interner {
        self.interner
    }
}

/// Decodes one record on its own (a fetch, a change read from a feed).
pub(super) fn decode(key: &[u8], value: &[u8]) -> Result<TokenRecord, StoreError> {
    let fields = Fields::parse(key, value)?;
    fields.record(fields.owner.into(), fields.scope_list()?, fields.label_map()?, fields.allowlist()?)
}

/// The shared copy decoded from each run of stored bytes seen so far.
#[derive(Debug)]
struct Seen<T> {
    /// The value of an absent field (most tokens have no allowlist).
    absent: Option<T>,
    runs: HashMap<Box<[u8]>, T>,
}

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Seen { absent: None, runs: HashMap::new() }
    }
}

/// Distinct runs remembered: a store whose every token has its own scopes
/// gains nothing from remembering them, and must not double its memory
/// while loading. Beyond this the decoder decodes (and the interner still
/// shares) each one.
const MAX_SEEN: usize = 1 << 16;

impl<T: Clone> Seen<T> {
    fn get(&mut self, field: &Repeated<'_>, decode: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        // A field split by other fields (never written so by `encode`):
        // its bytes hold those fields too, which are unlikely to repeat.
        let Some(run) = field.run() else { return decode() };
        if run.is_empty() {
            if let Some(absent) = &self.absent {
                return Ok(absent.clone());
            }
            let value = decode()?;
            self.absent = Some(value.clone());
            return Ok(value);
        }
        if let Some(shared) = self.runs.get(run) {
            return Ok(shared.clone());
        }
        let value = decode()?;
        if self.runs.len() < MAX_SEEN {
            self.runs.insert(run.into(), value.clone());
        }
        Ok(value)
    }
}

/// A stored record's fields, borrowed from the stored bytes; the repeated
/// ones located but not yet decoded.
struct Fields<'a> {
    key: &'a [u8],
    id: &'a [u8],
    hash: &'a [u8],
    hint: &'a str,
    name: &'a str,
    owner: &'a str,
    scopes: Repeated<'a>,
    labels: Repeated<'a>,
    create_time: i64,
    ttl_nanos: Option<u64>,
    expire_time: Option<i64>,
    revoke_time: Option<i64>,
    revoke_reason: &'a str,
    rotated_from: Option<&'a [u8]>,
    rotated_to: Option<&'a [u8]>,
    version: u64,
    not_before: Option<i64>,
    cidrs: Repeated<'a>,
    update_time: Option<i64>,
}

impl<'a> Fields<'a> {
    /// Reads the fields of [`StoredToken`] as protobuf does: absent scalars
    /// are zero or none, a repeated scalar field's last value wins, unknown
    /// fields are skipped.
    fn parse(key: &'a [u8], value: &'a [u8]) -> Result<Fields<'a>, StoreError> {
        let corrupt = |message: &str| corrupt(key, message);
        let mut f = Fields {
            key,
            id: &[],
            hash: &[],
            hint: "",
            name: "",
            owner: "",
            scopes: Repeated::new(6, value),
            labels: Repeated::new(7, value),
            create_time: 0,
            ttl_nanos: None,
            expire_time: None,
            revoke_time: None,
            revoke_reason: "",
            rotated_from: None,
            rotated_to: None,
            version: 0,
            not_before: None,
            cidrs: Repeated::new(17, value),
            update_time: None,
        };
        let mut wire = Wire::new(value);
        let mut previous = 0;
        while let Some((tag, field)) = wire.next().map_err(corrupt)? {
            let bad = || corrupt(&format!("field {tag} has the wrong wire type"));
            let bytes = || field.bytes().ok_or_else(bad);
            let text = || std::str::from_utf8(bytes()?).map_err(|_| corrupt(&format!("field {tag} is not UTF-8")));
            let int = || field.varint().ok_or_else(bad);
            match tag {
                1 => f.id = bytes()?,
                2 => f.hash = bytes()?,
                3 => f.hint = text()?,
                4 => f.name = text()?,
                5 => f.owner = text()?,
                6 => f.scopes.extend(bytes().map(|_| wire.last())?, previous),
                7 => f.labels.extend(bytes().map(|_| wire.last())?, previous),
                // int64 travels as its two's complement.
                8 => f.create_time = int()? as i64,
                9 => f.ttl_nanos = Some(int()?),
                10 => f.expire_time = Some(int()? as i64),
                11 => f.revoke_time = Some(int()? as i64),
                12 => f.revoke_reason = text()?,
                13 => f.rotated_from = Some(bytes()?),
                14 => f.rotated_to = Some(bytes()?),
                15 => f.version = int()?,
                16 => f.not_before = Some(int()? as i64),
                17 => f.cidrs.extend(bytes().map(|_| wire.last())?, previous),
                18 => f.update_time = Some(int()? as i64),
                _ => {}
            }
            previous = tag;
        }
        Ok(f)
    }

    fn corrupt(&self, message: &str) -> StoreError {
        corrupt(self.key, message)
    }

    fn scope_list(&self) -> Result<Scopes, StoreError> {
        self.scopes.items().map(|b| self.text(b).map(str::to_owned)).collect()
    }

    /// Map entries as protobuf reads them: a missing key or value is empty,
    /// and of repeated keys the last wins.
    fn label_map(&self) -> Result<Labels, StoreError> {
        self.labels
            .items()
            .map(|entry| {
                let (mut key, mut value) = ("", "");
                let mut wire = Wire::new(entry);
                while let Some((tag, field)) = wire.next().map_err(|m| self.corrupt(m))? {
                    let text = || self.text(field.bytes().ok_or_else(|| self.corrupt("bad label"))?);
                    match tag {
                        1 => key = text()?,
                        2 => value = text()?,
                        _ => {}
                    }
                }
                Ok((key.to_owned(), value.to_owned()))
            })
            .collect()
    }

    fn allowlist(&self) -> Result<Allowlist, StoreError> {
        let cidrs = self.cidrs.items().map(|b| self.text(b)?.parse::<Cidr>().map_err(|e| self.corrupt(&e.to_string())));
        Ok(Allowlist::new(cidrs.collect::<Result<Vec<_>, _>>()?))
    }

    fn text(&self, bytes: &'a [u8]) -> Result<&'a str, StoreError> {
        std::str::from_utf8(bytes).map_err(|_| self.corrupt("a text is not UTF-8"))
    }

    fn record(
        &self,
        owner: Arc<str>,
        scopes: Scopes,
        labels: Labels,
        cidrs: Allowlist,
    ) -> Result<TokenRecord, StoreError> {
        let id_of = |b: &[u8]| -> Result<TokenId, StoreError> {
            let bytes = b.try_into().map_err(|_| self.corrupt("bad id"))?;
            TokenId::from_bytes(bytes).map_err(|_| self.corrupt("bad id"))
        };
        let id = id_of(self.id)?;
        if id.to_bytes() != self.key {
            return Err(self.corrupt("id does not match key"));
        }
        Ok(TokenRecord {
            id,
            hash: TokenHash(self.hash.try_into().map_err(|_| self.corrupt("bad hash"))?),
            hint: self.hint.into(),
            name: self.name.into(),
            owner,
            scopes,
            labels,
            create_time: Time(self.create_time),
            ttl: self.ttl_nanos.map(Duration::from_nanos),
            expire_time: self.expire_time.map(Time),
            not_before: self.not_before.map(Time),
            allowed_cidrs: cidrs,
            update_time: Time(self.update_time.unwrap_or(self.create_time)),
            revoke_time: self.revoke_time.map(Time),
            revoke_reason: self.revoke_reason.into(),
            rotated_from: self.rotated_from.map(id_of).transpose()?,
            rotated_to: self.rotated_to.map(id_of).transpose()?,
            version: self.version,
        })
    }
}

/// Where a repeated field's elements lie in the stored bytes: from the
/// first to the end of the last, with whatever lies between.
struct Repeated<'a> {
    tag: u32,
    value: &'a [u8],
    span: Option<Range<usize>>,
    /// Whether nothing else lies between (as `encode` writes them): the
    /// span's bytes then stand for the field's value exactly.
    contiguous: bool,
}

impl<'a> Repeated<'a> {
    fn new(tag: u32, value: &'a [u8]) -> Repeated<'a> {
        Repeated { tag, value, span: None, contiguous: true }
    }

    /// Takes in an element at `at` (whole, from its key), read right after
    /// a field numbered `previous`.
    fn extend(&mut self, at: Range<usize>, previous: u32) {
        match &mut self.span {
            None => self.span = Some(at),
            Some(span) => {
                self.contiguous &= previous == self.tag;
                span.end = at.end;
            }
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.span.clone().map_or(&[], |span| &self.value[span])
    }

    /// The stored bytes of all the elements, if nothing lies between them.
    fn run(&self) -> Option<&'a [u8]> {
        self.contiguous.then(|| self.bytes())
    }

    /// The elements' payloads, in order.
    fn items(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let tag = self.tag;
        // Already read once by `Fields::parse`: nothing here can fail.
        let mut wire = Wire::new(self.bytes());
        std::iter::from_fn(move || wire.next().ok().flatten())
            .filter_map(move |(t, field)| if t == tag { field.bytes() } else { None })
    }
}

/// Protobuf's wire format, read in place.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Where the field last read began (its key).
    start: usize,
}

/// One field's value as the wire carries it.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed32 or fixed64 (tokend writes none; skipped).
    Fixed,
}

impl<'a> Field<'a> {
    fn varint(&self) -> Option<u64> {
        if let Field::Varint(v) = self { Some(*v) } else { None }
    }

    fn bytes(&self) -> Option<&'a [u8]> {
        if let Field::Bytes(b) = self { Some(b) } else { None }
    }
}

impl<'a> Wire<'a> {
    fn new(buf: &'a [u8]) -> Wire<'a> {
        Wire { buf, pos: 0, start: 0 }
    }

    /// The next field's number and value; `None` at the end.
    fn next(&mut self) -> Result<Option<(u32, Field<'a>)>, &'static str> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        self.start = self.pos;
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).ok().filter(|&t| t > 0).ok_or("bad field number")?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => self.skip(8).map(|_| Field::Fixed)?,
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "bad length")?;
                Field::Bytes(self.skip(len)?)
            }
            5 => self.skip(4).map(|_| Field::Fixed)?,
            // Groups (3, 4) are deprecated; tokend never wrote one.
            _ => return Err("unsupported wire type"),
        };
        Ok(Some((tag, field)))
    }

    /// The whole of the field last read, from its key.
    fn last(&self) -> Range<usize> {
        self.start..self.pos
    }

    fn skip(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        let bytes = self.buf.get(self.pos..).and_then(|rest| rest.get(..len)).ok_or("truncated field")?;
        self.pos += len;
        Ok(bytes)
    }

    /// A base-128 varint of at most ten bytes, as protobuf reads one.
    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for i in 0..10 {
            let &byte = self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err("varint overflows 64 bits");
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err("varint overflows 64 bits")
    }
}

/// The record under `key` could not be read: the key (an id), never the
/// stored bytes, goes into the message.
fn corrupt(key: &[u8], message: &str) -> StoreError {
    StoreError::Corrupt { key: hex(key), message: message.to_owned() }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{id::IdGenerator, token::Secret};

    /// The record decoded through prost's generated message: what `decode`
    /// did before it read the wire format itself, kept as its reference.
    fn prost_decode(key: &[u8], value: &[u8]) -> Result<TokenRecord, String> {
        let s = StoredToken::decode(value).map_err(|e| e.to_string())?;
        let id_of = |b: &[u8]| TokenId::from_bytes(b.try_into().map_err(|_| "bad id")?).map_err(|_| "bad id");
        let id = id_of(&s.id)?;
        if id.to_bytes() != key {
            return Err("id does not match key".into());
        }
        let cidrs = s.allowed_cidrs.iter().map(|c| c.parse::<Cidr>()).collect::<Result<Vec<_>, _>>();
        Ok(TokenRecord {
            id,
            hash: TokenHash(s.hash.as_slice().try_into().map_err(|_| "bad hash")?),
            hint: s.hint.into(),
            name: s.name.into(),
            owner: s.owner.into(),
            scopes: s.scopes.into_iter().collect(),
            labels: s.labels.into_iter().collect(),
            create_time: Time(s.create_time),
            ttl: s.ttl_nanos.map(Duration::from_nanos),
            expire_time: s.expire_time.map(Time),
            not_before: s.not_before.map(Time),
            allowed_cidrs: Allowlist::new(cidrs.map_err(|e| e.to_string())?),
            update_time: Time(s.update_time.unwrap_or(s.create_time)),
            revoke_time: s.revoke_time.map(Time),
            revoke_reason: s.revoke_reason.into(),
            rotated_from: s.rotated_from.as_deref().map(id_of).transpose()?,
            rotated_to: s.rotated_to.as_deref().map(id_of).transpose()?,
            version: s.version,
        })
    }

    fn full_record() -> TokenRecord {
        let ids = IdGenerator::default();
        let mut r = crate::record::sample(ids.next(Time(1_700_000_000_000_000_000)), &Secret::generate("tk"), "o");
        r.scopes = ["a:read".to_string(), "b".to_string()].into_iter().collect();
        r.labels = [("env", "prod"), ("team", "x")].map(|(k, v)| (k.to_string(), v.to_string())).into_iter().collect();
        r.ttl = Some(Duration::from_secs(3600));
        r.expire_time = Some(Time(1_700_003_600_000_000_000));
        r.rotated_from = Some(ids.next(Time(0)));
        r.not_before = Some(Time(1_700_000_100_000_000_000));
        r.allowed_cidrs = Allowlist::new(["10.0.0.0/8", "2001:db8::/32"].map(|c| c.parse().unwrap()));
        r.update_time = Time(1_700_000_200_000_000_000);
        r
    }

    /// One field numbered 99 of each wire type tokend might meet in a
    /// record written by a later version.
    fn unknown_fields() -> Vec<u8> {
        // Field 99's key (99 << 3 | wire type) takes two bytes.
        let mut b = vec![0x98, 0x06, 0x96, 0x01]; // varint 150
        b.extend([0x99, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]); // fixed64
        b.extend([0x9a, 0x06, 3, b'x', b'y', b'z']); // length-delimited
        b.extend([0x9d, 0x06, 1, 2, 3, 4]); // fixed32
        b
    }

    fn part(f: impl FnOnce(&mut StoredToken)) -> Vec<u8> {
        let mut s = StoredToken::default();
        f(&mut s);
        s.encode_to_vec()
    }

    #[test]
    fn records_round_trip_through_encoding() {
        let mut r = full_record();
        assert_eq!(decode(&r.id.to_bytes(), &encode(&r)).unwrap(), r);
        assert_eq!(Decoder::default().decode(&r.id.to_bytes(), &encode(&r)).unwrap(), r);
        // Negative times and a record with nothing optional.
        r.create_time = Time(-7);
        r.expire_time = Some(Time(-1));
        r.update_time = Time(-3);
        assert_eq!(decode(&r.id.to_bytes(), &encode(&r)).unwrap(), r);
        let plain = crate::record::sample(r.id, &Secret::generate("tk"), "");
        assert_eq!(decode(&r.id.to_bytes(), &encode(&plain)).unwrap(), plain);
        assert!(matches!(decode(&[0; 16], &encode(&r)), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn the_wire_reader_decodes_what_prost_decodes() {
        let r = full_record();
        let key = r.id.to_bytes();
        let mut first_scope = r.clone();
        first_scope.scopes = ["a:read".to_string()].into_iter().collect();
        let variants: Vec<(&str, Vec<u8>)> = vec![
            ("as written", encode(&r)),
            ("unknown fields after", [encode(&r), unknown_fields()].concat()),
            ("unknown fields before", [unknown_fields(), encode(&r)].concat()),
            (
                "a repeated field split by others",
                [
                    encode(&first_scope),
                    part(|s| s.name = "later".into()),
                    part(|s| s.scopes = vec!["b".into()]),
                    part(|s| s.allowed_cidrs = vec!["192.168.0.0/16".into()]),
                ]
                .concat(),
            ),
            ("a label key repeated", [encode(&r), part(|s| s.labels = [("env".into(), "dev".into())].into())].concat()),
            (
                "scalars repeated",
                [encode(&r), part(|s| (s.create_time, s.version, s.ttl_nanos) = (5, 9, Some(1)))].concat(),
            ),
            (
                // Entries with a missing value, fields in the other order,
                // and an unknown field inside.
                "odd label entries",
                [encode(&r), vec![0x3a, 3, 0x0a, 1, b'k'], vec![0x3a, 8, 0x12, 1, b'v', 0x0a, 1, b'w', 0x18, 1]]
                    .concat(),
            ),
        ];
        let mut shared = Decoder::default();
        for (what, value) in &variants {
            let want = prost_decode(&key, value).unwrap();
            assert_eq!(decode(&key, value).unwrap(), want, "{what}");
            assert_eq!(Decoder::default().decode(&key, value).unwrap(), want, "{what}");
            // A decoder that has seen the other variants' bytes.
            assert_eq!(shared.decode(&key, value).unwrap(), want, "{what}");
            assert_eq!(shared.decode(&key, value).unwrap(), want, "{what}, again");
        }
    }

    #[test]
    fn corrupt_records_are_refused_whatever_was_seen_before() {
        let r = full_record();
        let key = r.id.to_bytes();
        let value = encode(&r);
        let bad_scope = part(|s| s.scopes = vec!["a".into()]).into_iter().map(|b| if b == b'a' { 0xff } else { b });
        let bad_scope: Vec<u8> = bad_scope.collect();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", value[..value.len() - 1].to_vec()),
            ("a length past the end", [value.clone(), vec![0x22, 5, b'a']].concat()),
            ("a varint past 64 bits", [value.clone(), vec![0x40], vec![0xff; 10], vec![0x01]].concat()),
            ("field number 0", [value.clone(), vec![0x00, 0x01]].concat()),
            ("the name as a number", [value.clone(), vec![0x20, 0x01]].concat()),
            ("the version as bytes", [value.clone(), vec![0x7a, 1, 0]].concat()),
            ("a name that is not UTF-8", [value.clone(), vec![0x22, 1, 0xff]].concat()),
            ("a scope that is not UTF-8", [bad_scope, value.clone()].concat()),
            ("a label that is not UTF-8", [value.clone(), vec![0x3a, 3, 0x0a, 1, 0xff]].concat()),
            ("an unparsable CIDR", [value.clone(), part(|s| s.allowed_cidrs = vec!["10.0.0.0/99".into()])].concat()),
            ("a short hash", [value.clone(), part(|s| s.hash = vec![1; 31])].concat()),
            ("a bad predecessor", [value.clone(), part(|s| s.rotated_from = Some(vec![1; 3]))].concat()),
            ("nothing", Vec::new()),
        ];
        let mut decoder = Decoder::default();
        for (what, value) in &cases {
            assert!(prost_decode(&key, value).is_err(), "{what}: prost refuses it too");
            assert!(matches!(decode(&key, value), Err(StoreError::Corrupt { .. })), "{what}");
            // Twice: a failure is not remembered as a value.
            for _ in 0..2 {
                assert!(matches!(decoder.decode(&key, value), Err(StoreError::Corrupt { .. })), "{what}");
            }
        }
        // A group (wire type 3), which tokend never writes.
        assert!(matches!(decode(&key, &[value.clone(), vec![0x4b, 0x4c]].concat()), Err(StoreError::Corrupt { .. })));
        // Nothing secret or stored is echoed: the message names the key.
        let Err(e) = decode(&key, b"\x22\x01\xff") else { panic!("decoded") };
        assert!(e.to_string().contains(&hex(&key)), "{e}");
    }

    #[test]
    fn past_the_remembered_runs_records_still_decode_and_share() {
        let r = full_record();
        let key = r.id.to_bytes();
        let with_scope = |n: usize| {
            let record = TokenRecord { scopes: [format!("s{n}")].into_iter().collect(), ..r.clone() };
            (encode(&record), record)
        };
        let mut decoder = Decoder::default();
        for n in 0..MAX_SEEN + 2 {
            let (value, want) = with_scope(n);
            assert_eq!(decoder.decode(&key, &value).unwrap(), want);
        }
        assert_eq!(decoder.scopes.runs.len(), MAX_SEEN, "bounded");
        // One remembered and one past the bound: both decode again to the
        // same shared copy (the interner shares what is not remembered).
        for n in [0, MAX_SEEN + 1] {
            let (value, want) = with_scope(n);
            let (first, again) = (decoder.decode(&key, &value).unwrap(), decoder.decode(&key, &value).unwrap());
            assert_eq!(first, want);
            assert!(first.scopes.shares_allocation(&again.scopes), "scope set {n}");
        }
    }

    #[test]
    fn a_decoder_shares_what_records_repeat_and_hands_it_over() {
        let ids = IdGenerator::default();
        let a = TokenRecord { id: ids.next(Time(1)), hash: Secret::generate("tk").hash(), ..full_record() };
        let b = TokenRecord { id: ids.next(Time(2)), hash: Secret::generate("tk").hash(), ..full_record() };
        let mut decoder = Decoder::default();
        let (da, db) = [&a, &b].map(|r| decoder.decode(&r.id.to_bytes(), &encode(r)).unwrap()).into();
        assert_eq!((&da, &db), (&a, &b));
        assert!(Arc::ptr_eq(&da.owner, &db.owner));
        assert!(da.scopes.shares_allocation(&db.scopes));
        assert!(da.labels.shares_allocation(&db.labels));
        assert!(da.allowed_cidrs.shares_allocation(&db.allowed_cidrs));
        // Equal scopes stored as other bytes (split) are shared too.
        let mut c = TokenRecord { id: ids.next(Time(3)), ..a.clone() };
        c.scopes = ["a:read".to_string()].into_iter().collect();
        let split = [encode(&c), part(|s| s.name = "n".into()), part(|s| s.scopes = vec!["b".into()])].concat();
        let dc = decoder.decode(&c.id.to_bytes(), &split).unwrap();
        assert!(dc.scopes.shares_allocation(&da.scopes), "{:?}", dc.scopes);
        // The index goes on sharing the same copies.
        let mut interner = decoder.into_interner();
        let mut fresh = a.clone();
        fresh.owner = "o".into();
        fresh.scopes = a.scopes.iter().map(str::to_owned).collect();
        interner.record(&mut fresh);
        assert!(Arc::ptr_eq(&fresh.owner, &da.owner));
        assert!(fresh.scopes.shares_allocation(&da.scopes));
    }
}
