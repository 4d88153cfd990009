//! One HTTP request to the routes of an in-memory node. See `dynamo::fuzz::http_routes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo::fuzz::http_routes(data));
