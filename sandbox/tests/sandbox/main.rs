//! Integration tests of orrery-sandbox, as one binary: real CPython through
//! the crate's host binary as zygote, real wasmtime.

mod common;
mod python;
mod python_escapes;
mod python_os_wall;
mod wasm;
