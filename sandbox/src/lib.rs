//! Running untrusted code for Orrery.
//!
//! This crate is being built under its own issue (sandboxed execution of
//! Python and WebAssembly); the foundation only reserves its place in the
//! workspace so that `plugins` and `gateway` can depend on it.
