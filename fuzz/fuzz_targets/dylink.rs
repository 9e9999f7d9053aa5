#![no_main]
// The checks live in pynbox::fuzzing so that tests/fuzz_regressions.rs can
// replay what the fuzzer finds.
libfuzzer_sys::fuzz_target!(|data: &[u8]| pynbox::fuzzing::dylink(data));
