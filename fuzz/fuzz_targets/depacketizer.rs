#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtspgate::fuzzing::depacketizer(data));
