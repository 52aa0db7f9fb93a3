//! Integration tests of orrery-sandbox, as one binary: real CPython through
//! the crate's host binary as zygote, real wasmtime.

mod common;
mod concurrency;
mod module_store;
mod python;
mod python_escapes;
mod python_os_wall;
mod wasm;
