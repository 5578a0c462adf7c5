//! In-process verification against an index of 1,000,000 tokens:
//! a valid token, an unknown one, a malformed one, and the bare parse +
//! blake3 step. `cargo bench --bench verify`.

use std::{collections::HashMap, hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use tokend::{
    clock::Clock,
    index::Index,
    seed,
    token::{self, Secret},
    verify::{Outcome, Verifier},
};

const TOKENS: usize = 1_000_000;

fn bench(c: &mut Criterion) {
    let now = Clock::System.now();
    let seeded = seed::tokens(TOKENS, 1000, now);
    let index = Arc::new(Index::load(seeded.records, &HashMap::new()));
    let verifier = Verifier::new(index, Clock::System);
    let valid: Vec<String> = seeded.secrets.iter().map(|s| s.expose().to_owned()).collect();
    let unknown = Secret::generate("tk");
    let mut malformed = valid[0].clone();
    malformed.pop();
    malformed.push('!');
    let scopes = ["orders:read"];
    assert_eq!(verifier.verify(&valid[0], &scopes).outcome, Outcome::Ok);
    assert_eq!(verifier.verify(unknown.expose(), &scopes).outcome, Outcome::Unknown);
    assert_eq!(verifier.verify(&malformed, &scopes).outcome, Outcome::Malformed);

    let mut g = c.benchmark_group("verify_1m");
    let mut i = 0usize;
    g.bench_function("valid", |b| {
        b.iter(|| {
            i = (i + 1) % valid.len();
            black_box(verifier.verify(black_box(&valid[i]), &scopes).outcome)
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
