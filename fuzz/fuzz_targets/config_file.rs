#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtspgate::fuzzing::config_file(data));
