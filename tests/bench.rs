//! `tokend bench --keep DIR`: a store seeded once and reused, by the
//! start-up and the Verify measurements alike (the real binary, tiny runs).

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_tokend");

/// Runs `tokend bench` with `args`; returns whether it succeeded and what
/// it printed (stdout, then stderr).
fn bench(args: &[&str], keep: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--keep")
        .arg(keep)
        .env("RUST_LOG", "warn")
        .output()
        .expect("tokend runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn a_kept_store_is_seeded_once_and_reused_by_startup_and_verify_runs() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("kept");

    let (ok, text) = bench(&["--mode", "startup", "--tokens", "300"], &keep);
    assert!(ok, "{text}");
    assert!(text.contains("300 tokens seeded"), "{text}");
    assert!(text.contains("process start → SERVING"), "{text}");
    let secrets = keep.join("tokend-bench-secrets");
    let mode = std::fs::metadata(&secrets).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the kept secrets are readable by their owner only");
    // The admin token and every sampled token (all 300 at this size).
    let kept = std::fs::read_to_string(&secrets).unwrap();
    assert_eq!(kept.lines().count(), 301);
    assert!(kept.lines().all(|l| l.starts_with("tk_")));

    let (ok, text) = bench(&["--mode", "verify", "--tokens", "300", "--seconds", "0.05"], &keep);
    assert!(ok, "{text}");
    assert!(text.contains("reusing 300 tokens"), "{text}");
    assert!(!text.contains("(kept)"), "seeded again: {text}");
    // The kept tokens verified: the writer phase printed its ratio.
    assert!(text.contains("ratio"), "{text}");

    // Another count, or a mode that cannot reuse a store, is refused.
    let (ok, text) = bench(&["--mode", "startup", "--tokens", "301"], &keep);
    assert!(!ok && text.contains("holds 300 seeded tokens, not 301"), "{text}");
    let (ok, text) = bench(&["--mode", "write", "--tokens", "300"], &keep);
    assert!(!ok && text.contains("--keep goes with --mode startup or --mode verify"), "{text}");
    assert!(!text.contains("reusing"), "refused before touching the store: {text}");

    // A directory that was not seeded by tokend bench is not written to.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let (ok, text) = bench(&["--mode", "startup", "--tokens", "300"], &other);
    assert!(!ok && text.contains("was not seeded by --keep"), "{text}");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
}
