//! One line typed into the REPL. See `dynamo::fuzz::repl_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo::fuzz::repl_parse(data));
