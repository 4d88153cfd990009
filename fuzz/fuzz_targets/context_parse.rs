//! One context (version vector) as a person types it. See `dynamo::fuzz::context_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo::fuzz::context_parse(data));
