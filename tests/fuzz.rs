//! Property-based fuzzing of the token parser and the Verify entry point
//! (cargo-fuzz needs a nightly toolchain, which these machines do not have;
//! proptest runs on stable). A seed corpus of hostile inputs lives in
//! `tests/corpus/presented.txt` (one value per line, `\u{..}` escapes);
//! failures proptest finds are kept in `tests/corpus/fuzz.proptest-regressions`
//! and replayed first on every run.
//!
//! CI runs `TOKEND_FUZZ_CASES` cases per property (default 20,000, a few
//! seconds); a long run: `TOKEND_FUZZ_CASES=5000000 cargo test --release --test fuzz`.

use std::{collections::HashMap, sync::Arc};

use proptest::{prelude::*, test_runner::FileFailurePersistence};
use tokend::{
    clock::Clock,
    index::Index,
    seed,
    token::{self, BODY_LEN, CHECKSUM_LEN, Secret},
    verify::{Outcome, Verifier},
};

fn cases() -> u32 {
    std::env::var("TOKEND_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

fn fixture() -> (Verifier, Vec<Secret>) {
    let seeded = seed::tokens(100, 1, Clock::System.now());
    let index = Arc::new(Index::load(seeded.records, &HashMap::new()));
    (Verifier::new(index, Clock::System), seeded.secrets)
}

/// Unescapes the corpus format (Python's unicode_escape).
fn unescape(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(k @ ('x' | 'u' | 'U')) => {
                let n = match k {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = (0..n).filter_map(|_| chars.next()).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            other => panic!("bad escape {other:?} in corpus"),
        }
    }
    out
}

#[test]
fn the_seed_corpus_is_rejected_without_panicking() {
    let (verifier, _) = fixture();
    let corpus = include_str!("corpus/presented.txt");
    let mut n = 0;
    for line in corpus.lines() {
        let value = unescape(line);
        assert!(token::parse(&value).is_err(), "{value:?}");
        let outcome = verifier.verify(&value, &["orders:read"]).outcome;
        assert_eq!(outcome, Outcome::Malformed, "{value:?}");
        n += 1;
    }
    assert!(n >= 30);
}

fn presented() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,80}",
        // Near-tokens: a plausible prefix, an underscore, base62-ish tails.
        "[a-z][a-z0-9]{0,17}_[0-9A-Za-z]{40,52}",
        "(Bearer|bearer|access_token|Basic)[ \t]{0,3}[a-z]{1,3}_[0-9A-Za-z]{47,51}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/corpus/fuzz.proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// Any input: no panic; Ok only for a token whose shape and checksum are
    /// right, returned as a substring of the input.
    #[test]
    fn parse_never_panics_and_accepts_only_well_formed_tokens(s in presented()) {
        if let Ok(t) = token::parse(&s) {
            prop_assert!(s.contains(t));
            prop_assert!(token::parse_bare(t).is_ok());
            let tail = &t[t.len() - BODY_LEN - CHECKSUM_LEN..];
            prop_assert!(tail.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    /// Any input and any required scopes: Verify answers without panicking,
    /// and only a real issued token is ever more than Malformed/Unknown.
    #[test]
    fn verify_never_panics_and_never_accepts_a_stranger(s in presented(), scopes in proptest::collection::vec(any::<String>(), 0..4)) {
        static FIXTURE: std::sync::OnceLock<(Verifier, Vec<Secret>)> = std::sync::OnceLock::new();
        let (verifier, _) = FIXTURE.get_or_init(fixture);
        let outcome = verifier.verify(&s, &scopes).outcome;
        prop_assert!(matches!(outcome, Outcome::Malformed | Outcome::Unknown), "{outcome:?}");
    }

    /// A real token with one character changed, removed or inserted anywhere
    /// is never accepted.
    #[test]
    fn edited_tokens_are_never_accepted(index in 0usize..100, pos in any::<prop::sample::Index>(), c in any::<char>(), edit in 0u8..3) {
        static FIXTURE: std::sync::OnceLock<(Verifier, Vec<Secret>)> = std::sync::OnceLock::new();
        let (verifier, secrets) = FIXTURE.get_or_init(fixture);
        let original: Vec<char> = secrets[index].expose().chars().collect();
        let mut edited = original.clone();
        let at = pos.index(original.len());
        match edit {
            0 => edited[at] = c,
            1 => { edited.remove(at); }
            _ => edited.insert(at, c),
        }
        prop_assume!(edited != original);
        // Surrounding whitespace is trimmed on purpose (header values).
        prop_assume!(!(edit == 2 && at == 0 && c.is_whitespace()));
        let text: String = edited.into_iter().collect();
        prop_assert_eq!(verifier.verify(&text, &[] as &[&str]).outcome, Outcome::Malformed);
    }
}
