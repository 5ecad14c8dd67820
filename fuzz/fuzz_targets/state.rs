#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| emberws_fuzz::state(data));
