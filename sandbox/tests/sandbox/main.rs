//! Integration tests of orrery-sandbox, as one binary: real CPython through
//! the crate's host binary as zygote, real wasmtime.

#![allow(clippy::unwrap_used)] // test and benchmark code: a failed unwrap fails the run
mod common;
mod concurrency;
mod module_store;
mod python;
mod python_escapes;
mod python_os_wall;
mod wasm;
