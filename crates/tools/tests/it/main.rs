//! The tools' integration tests, one binary (one build and link, not one each): the demo
//! as a user runs it (`demo`) and a short run of the load tool (`load_smoke`), both
//! against the real server binary; finding that binary is in `common`.
// Test helpers outside #[test] functions: a failed set-up should panic loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod demo;
mod load_smoke;
