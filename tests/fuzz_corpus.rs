//! The fuzz targets' seed corpus (`fuzz/seeds/<target>/*`) replayed as ordinary tests, with the
//! very checks the targets run (`fuzz/checks/`), so every input that once mattered stays covered
//! where libFuzzer cannot run.

use std::{fs, path::PathBuf};

#[path = "../fuzz/checks/event_roundtrip.rs"]
mod event_roundtrip;
#[path = "../fuzz/checks/meter.rs"]
mod meter;
#[path = "../fuzz/checks/parser.rs"]
mod parser;

#[global_allocator]
static METER: meter::Meter = meter::Meter;

/// The seed files of one target, sorted by name; fails if there are none.
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seeds in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

/// Runs `check` on every seed, naming the seed that fails.
fn replay(target: &str, check: fn(&[u8])) {
    for (path, input) in seeds(target) {
        if let Err(panic) = std::panic::catch_unwind(|| check(&input)) {
            eprintln!("seed {} failed", path.display());
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn parser_seeds() {
    replay("parser", parser::check);
}

#[test]
fn event_roundtrip_seeds() {
    replay("event_roundtrip", event_roundtrip::check);
}

/// The memory check can fail: a parser that keeps what it is fed is caught.
#[test]
fn meter_sees_retained_bytes() {
    let before = meter::live_bytes();
    let kept = vec![0u8; 10_000];
    assert!(meter::live_bytes() - before >= 10_000);
    drop(kept);
    assert!(meter::live_bytes() - before < 10_000);
}
