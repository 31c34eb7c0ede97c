#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zhengzhao_fuzzing::certificates(data));
