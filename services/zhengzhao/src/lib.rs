//! The all-in-one library: every service wired in one process. The binary in
//! `main.rs` serves it and is the operator CLI; tests build it directly.

#![forbid(unsafe_code)]

pub mod audit;
pub mod examples;
pub mod import;
pub mod serve;
pub mod usage_audit;
