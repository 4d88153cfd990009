//! One frame body from a peer, decoded as the node's server decodes it. See `dynamo::fuzz::rpc_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dynamo::fuzz::rpc_frame(data));
