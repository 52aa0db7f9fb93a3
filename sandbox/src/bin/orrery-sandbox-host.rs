//! A minimal host for the sandbox's own tests and benchmark: it is what the
//! gateway's `main` does, and nothing else. Run with the hidden zygote
//! subcommand it becomes the Python zygote.

fn main() {
    if std::env::args().nth(1).as_deref() == Some(orrery_sandbox::python::ZYGOTE_SUBCOMMAND) {
        orrery_sandbox::python::zygote_main();
    }
    eprintln!("usage: this binary is started by orrery-sandbox as its python zygote");
    std::process::exit(2);
}
