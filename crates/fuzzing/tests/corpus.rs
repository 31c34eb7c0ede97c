//! The fuzz targets on stable: each over its committed corpus
//! (`fuzz/corpus/<target>/`, what libFuzzer kept as covering something new)
//! and over random inputs, so CI replays what the fuzzer found in seconds.

use proptest::prelude::*;
use zhengzhao_fuzzing::TARGETS;

fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(name);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("corpus files read")))
        .collect();
    out.sort();
    out
}

#[test]
fn every_target_has_a_corpus_and_a_libfuzzer_entry() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        assert!(corpus(name).len() >= 10, "fuzz/corpus/{name} holds too little");
        assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml has no target {name}");
        let body = std::fs::read_to_string(root.join("fuzz_targets").join(format!("{name}.rs")))
            .unwrap_or_else(|_| panic!("fuzz/fuzz_targets/{name}.rs"));
        assert!(body.contains(&format!("zhengzhao_fuzzing::{}", function_of(name))), "{name}.rs runs another body");
    }
}

/// The body's function name for a target (`jws` runs `jws_document`).
fn function_of(name: &str) -> &str {
    if name == "jws" { "jws_document" } else { name }
}

#[test]
fn every_target_survives_its_corpus() {
    for (name, body) in TARGETS {
        for (file, input) in corpus(name) {
            let outcome = std::panic::catch_unwind(|| body(&input));
            assert!(outcome.is_ok(), "{name} panics on fuzz/corpus/{name}/{file}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_target_survives_random_bytes(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        for (_, body) in TARGETS {
            body(&input);
        }
    }

    #[test]
    fn every_target_survives_random_text(input in "\\PC{0,256}") {
        for (_, body) in TARGETS {
            body(input.as_bytes());
        }
    }
}
