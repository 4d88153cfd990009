//! dynamo: a Dynamo-style replicated key-value database.
//!
//! The crate is layered; a module uses only modules below it (see ARCHITECTURE.md):
//!
//! | layer | modules |
//! |---|---|
//! | 0 | [`error`], [`types`], [`runtime`] |
//! | 1 | [`vclock`], [`ring`], [`config`] |
//! | 2 | [`storage`] |
//! | 3 | [`net`], [`rpc`], [`security`] |
//! | 4 | [`peers`], [`outbox`] |
//! | 5 | [`coordinator`], [`membership`], [`handoff`], [`rebalance`], [`antientropy`], [`detector`], [`metrics`] |
//! | 6 | [`server`], [`client`], [`http`], [`repl`] |
//! | 7 | [`fuzz`]: the fuzz targets' harnesses (`fuzz/`, `tests/fuzz_corpus.rs`), no part of a node |

#[cfg(test)]
#[macro_use]
mod script_tests;

pub mod error;
pub mod types;

pub mod config;
pub mod ring;
pub mod vclock;

pub mod runtime;
pub mod storage;

pub mod net;
pub mod rpc;
pub mod security;

pub mod context;
pub mod outbox;
pub mod peers;

pub mod antientropy;
pub mod consensus;
pub mod coordinator;
pub mod detector;
pub mod handoff;
pub mod membership;
pub mod metrics;
pub mod rebalance;

pub mod backup;
pub mod client;
pub mod http;
pub mod repl;
pub mod server;

pub mod fuzz;

pub use error::{Error, Result};
