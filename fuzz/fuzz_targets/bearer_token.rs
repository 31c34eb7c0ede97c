#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zhengzhao_fuzzing::bearer_token(data));
