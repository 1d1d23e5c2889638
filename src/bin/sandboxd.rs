//! sandboxd: the user daemon (see `sandboxd::daemon`).

use std::path::PathBuf;

use clap::Parser;

/// Runs rootless runc sandboxes from TOML profiles, managed over the D-Bus session bus.
///
/// One daemon runs per user, normally as the user service (`systemctl --user start
/// sandboxd`); its log is `journalctl --user -u sandboxd`. To watch one in a terminal, stop
/// the service first: a second daemon refuses to start.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Daemon configuration file [default: $XDG_CONFIG_HOME/sandboxd/sandboxd.toml]
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    // Helper mode first: it must join namespaces while this process has a single thread.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(sandboxd::netns::HELPER_ARG) {
        sandboxd::netns::helper_main(&argv[2..]);
    }
    if argv.get(1).map(String::as_str) == Some(sandboxd::runtime::LOCK_ARG) {
        sandboxd::runtime::lock_main(&argv[2..]);
    }
    if argv.get(1).map(String::as_str) == Some(sandboxd::runtime::LAYER_ARG) {
        sandboxd::runtime::layer_main(&argv[2..]);
    }
    let args = Args::parse();
    sandboxd::logging::init("sandboxd");
    // Before anything touches state: a user session, and no other daemon of this user.
    let instance = sandboxd::daemon::check_session()
        .map_err(|e| e.to_string())
        .and_then(|paths| {
            sandboxd::instance::acquire(&paths.base).map_err(|e| sandboxd::error_chain(&e))
        });
    let _instance = match instance {
        Ok(lock) => lock,
        Err(msg) => {
            eprintln!("sandboxd: {msg}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Before any thread exists: orphaned container inits must come to this process.
    sandboxd::daemon::become_subreaper();
    // Output pipes of sandboxes an earlier daemon ran, kept by systemd across its crash.
    sandboxd::runtime::recover_stored_output();
    let config = args
        .config
        .unwrap_or_else(sandboxd::config::DaemonConfig::default_path);
    let result = sandboxd::daemon::Settings::load(&config)
        .map_err(|e| sandboxd::error_chain(&e))
        .and_then(|settings| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| format!("tokio: {e}"))?;
            rt.block_on(sandboxd::daemon::run(settings))
                .map_err(|e| sandboxd::error_chain(&e))
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(msg) => {
            tracing::error!("{msg}");
            eprintln!("sandboxd: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
