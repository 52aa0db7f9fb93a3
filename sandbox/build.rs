//! Gives this crate's own binaries and tests an rpath to libpython, so they
//! run without LD_LIBRARY_PATH. Binaries of other crates need the same lines
//! in their own build script (see the crate docs).

fn main() {
    let config = pyo3_build_config::get();
    if let Some(dir) = config.lib_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
