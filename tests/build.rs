//! The in-process harness links the gateway, which embeds CPython: give
//! this crate's tests and binaries an rpath to libpython, as the gateway's
//! build script does for `orrery`, so they run without LD_LIBRARY_PATH.

fn main() {
    if let Some(dir) = pyo3_build_config::get().lib_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
