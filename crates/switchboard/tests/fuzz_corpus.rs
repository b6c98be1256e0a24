//! The fuzz targets (`fuzz/src/lib.rs`) on stable: every input in `fuzz/corpus/<target>/`
//! and `fuzz/regressions/<target>/` (each crash a fuzzer found stays there), plus a few
//! thousand pseudo-random inputs per pure target. Any panic, on any thread, aborts this
//! test binary. `scripts/fuzz` runs the targets coverage-guided (cargo-fuzz on stable, `-s none`).

#[path = "../../../fuzz/src/lib.rs"]
#[allow(dead_code, unreachable_pub, missing_docs)]
mod fuzz;

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_file() {
                let data = std::fs::read(&path).expect("read input");
                out.push((path.display().to_string(), data));
            }
        }
    }
    out.sort();
    out
}

/// xorshift: the same pseudo-random inputs on every run.
fn noise(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let len = (next() % 64) as usize;
            (0..len).map(|_| (next() % 256) as u8).collect()
        })
        .collect()
}

#[test]
fn every_target_survives_its_corpus_and_regressions() {
    fuzz::abort_on_panic();
    let mut total = 0;
    for (name, target) in fuzz::TARGETS {
        let corpus = inputs(name);
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} has seeds");
        for (path, data) in &corpus {
            eprintln!("{name}: {path}");
            target(data);
        }
        total += corpus.len();
    }
    assert!(total > 0);
}

#[test]
fn pure_targets_survive_random_bytes() {
    fuzz::abort_on_panic();
    for (name, target) in fuzz::TARGETS {
        if matches!(
            *name,
            "engineio_packet" | "socketio_packet" | "nest_tcp_frames" | "config_toml"
        ) {
            for data in noise(name.len() as u64 * 7919, 3000) {
                target(&data);
            }
        }
    }
}
