//! In-process verification against an index of 1,000,000 tokens
//! (`TOKEND_BENCH_TOKENS=10000000` for the README's 10M column): a valid
//! token, one with a 16-entry IP allowlist (the address matching the last
//! entry, the longest scan), an unknown one, a malformed one, and the bare
//! parse + blake3 step. `cargo bench --bench verify`.

use std::{collections::HashMap, hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use tokend::{
    cidr::{Allowlist, Cidr, Client},
    clock::Clock,
    index::Index,
    seed,
    token::{self, Secret},
    verify::{Outcome, Verifier},
};

/// Tokens in the index unless `TOKEND_BENCH_TOKENS` says otherwise.
const TOKENS: usize = 1_000_000;

fn bench(c: &mut Criterion) {
    let tokens = match std::env::var("TOKEND_BENCH_TOKENS") {
        Ok(n) => n.parse().expect("TOKEND_BENCH_TOKENS: a number of tokens"),
        Err(_) => TOKENS,
    };
    let now = Clock::System.now();
    let mut seeded = seed::tokens(tokens, 1000, now);
    // Every other kept token (the kept ones are every 1,000th) gets a list
    // of 15 networks that do not match and one that does, IPv4 and IPv6.
    let cidrs = (0..15)
        .map(|i| if i % 2 == 0 { format!("192.0.{i}.0/24") } else { format!("2001:db8:{i}::/48") })
        .chain(["10.0.0.0/8".to_owned()]);
    let allowlist = Allowlist::new(cidrs.map(|c| c.parse::<Cidr>().expect("a network")));
    for (n, record) in seeded.records.iter_mut().enumerate() {
        if n % 2000 == 1000 {
            record.allowed_cidrs = allowlist.clone();
        }
    }
    let index = Arc::new(Index::load(seeded.records, &HashMap::new()));
    let verifier = Verifier::new(index, Clock::System);
    let kept: Vec<String> = seeded.secrets.iter().map(|s| s.expose().to_owned()).collect();
    let (valid, listed): (Vec<_>, Vec<_>) = kept.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).unzip();
    let unknown = Secret::generate("tk");
    let mut malformed = valid[0].clone();
    malformed.pop();
    malformed.push('!');
    let scopes = ["orders:read"];
    assert_eq!(verifier.verify(&valid[0], &scopes).outcome, Outcome::Ok);
    assert_eq!(verifier.verify(unknown.expose(), &scopes).outcome, Outcome::Unknown);
    assert_eq!(verifier.verify(&malformed, &scopes).outcome, Outcome::Malformed);
    assert_eq!(verifier.verify_from(&listed[0], &scopes, Client::Reported("10.1.2.3")).outcome, Outcome::Ok);
    assert_eq!(verifier.verify_from(&listed[0], &scopes, Client::Reported("11.1.2.3")).outcome, Outcome::IpNotAllowed);

    let mut g = c.benchmark_group(match tokens {
        n if n % 1_000_000 == 0 => format!("verify_{}m", n / 1_000_000),
        n => format!("verify_{n}"),
    });
    let mut i = 0usize;
    g.bench_function("valid", |b| {
        b.iter(|| {
            i = (i + 1) % valid.len();
            black_box(verifier.verify(black_box(&valid[i]), &scopes).outcome)
        })
    });
    let mut j = 0usize;
    g.bench_function("valid_allowlist_16", |b| {
        b.iter(|| {
            j = (j + 1) % listed.len();
            black_box(
                verifier.verify_from(black_box(&listed[j]), &scopes, Client::Reported(black_box("10.1.2.3"))).outcome,
            )
        })
    });
    g.bench_function("unknown", |b| {
        b.iter(|| black_box(verifier.verify(black_box(unknown.expose()), &scopes).outcome))
    });
    g.bench_function("malformed", |b| b.iter(|| black_box(verifier.verify(black_box(&malformed), &scopes).outcome)));
    g.bench_function("parse_and_hash", |b| {
        b.iter(|| black_box(token::hash_token(token::parse(black_box(&valid[0])).unwrap())))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
