//! `sandboxctl run`: one command in a throwaway sandbox. The daemon makes the sandbox
//! (`Manager.Run`), the command starts in it as `exec` starts one (a pty of the sandbox's
//! own on a terminal, the caller's pipes and files otherwise), and the sandbox is removed
//! when it ends; if this process dies first, the daemon sees it leave the bus and removes
//! the sandbox itself.

use std::collections::HashMap;

use zbus::zvariant::Value;

use super::proxy::ManagerProxy;
use super::{complete, from_bus, from_session, inner_status, session, terminal, Failure};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The profile the sandbox is made from
    #[arg(long, default_value = "default", add = complete::profiles())]
    profile: String,
    /// The sandbox's name [default: run- and 8 hex digits]
    #[arg(long)]
    name: Option<String>,
    /// Keep the sandbox running after COMMAND ends (then `sandboxctl diff NAME`, `exec`,
    /// `stop NAME`)
    #[arg(long)]
    keep: bool,
    /// Neither bind the current folder nor work in it
    #[arg(long)]
    no_cwd: bool,
    /// Let writes reach the root file system (no copy-on-write layer)
    #[arg(long)]
    no_overlay: bool,
    /// Print what COMMAND added, changed and deleted in the root (on stderr) when it ends
    #[arg(long)]
    diff: bool,
    /// Add NAME=VALUE to the command's environment (repeatable)
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// User inside [default: the profile's process.user, else root]
    #[arg(long)]
    user: Option<String>,
    /// The command and its arguments (with or without a `--` before them)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub async fn run(args: RunArgs, manager: &ManagerProxy<'_>) -> Result<u8, Failure> {
    let cwd = if args.no_cwd {
        None
    } else {
        Some(std::env::current_dir().map_err(|e| Failure {
            code: super::EXIT_FAILURE,
            message: format!("the current folder: {e} (or pass --no-cwd)"),
        })?)
    };
    let mut options: HashMap<&str, Value<'_>> = HashMap::new();
    if let Some(n) = &args.name {
        options.insert("name", Value::from(n.as_str()));
    }
    let cwd_text = cwd.as_ref().map(|c| c.display().to_string());
    if let Some(c) = &cwd_text {
        options.insert("cwd", Value::from(c.as_str()));
    }
    options.insert("overlay", Value::from(!args.no_overlay));
    options.insert("keep", Value::from(args.keep));
    let (name, _) = manager
        .run(&args.profile, options)
        .await
        .map_err(from_bus)?;
    if args.keep {
        eprintln!(
            "sandboxctl: running in {name}, kept afterwards (`sandboxctl stop {name}` removes it)"
        );
    }
    let target = session::Target {
        name: &name,
        user: args.user.as_deref(),
        cwd: None,
        env: &args.env,
    };
    let status = if terminal::is_tty(0) && terminal::is_tty(1) {
        session::shell(manager, &target, &args.command).await
    } else {
        session::exec(manager, &target, &args.command).await
    };
    if args.diff {
        match manager.diff(&name).await {
            Ok(changes) if changes.is_empty() => eprintln!("no changes to the root"),
            Ok(changes) => {
                for (kind, path) in changes {
                    eprintln!(
                        "{} {}",
                        kind_mark(&kind),
                        super::logs::escape_controls(&path)
                    );
                }
            }
            Err(e) => eprintln!("sandboxctl: {}", from_bus(e).message),
        }
    }
    if !args.keep {
        if let Err(e) = manager.stop_sandbox(&name).await {
            eprintln!("sandboxctl: removing {name}: {}", from_bus(e).message);
        }
    }
    Ok(inner_status(status.map_err(from_session)?))
}

/// The one-letter mark of a change: A added, C changed, D deleted.
pub fn kind_mark(kind: &str) -> char {
    match kind {
        "added" => 'A',
        "deleted" => 'D',
        _ => 'C',
    }
}
