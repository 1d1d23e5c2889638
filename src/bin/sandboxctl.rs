//! sandboxctl: the command-line client (see `sandboxd::ctl`).

fn main() -> std::process::ExitCode {
    sandboxd::ctl::main()
}
