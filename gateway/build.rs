//! Gives the `orrery` binary an rpath to libpython (the sandbox embeds
//! CPython), so it runs without LD_LIBRARY_PATH.

fn main() {
    if let Some(dir) = pyo3_build_config::get().lib_dir() {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
