//! sandbox-init: the sandbox's pid 1 (see `sandboxd::init`).

fn main() {
    std::process::exit(sandboxd::init::run(std::env::args_os().skip(1).collect()));
}
