//! The command line: `sandboxctl`'s commands and their arguments (clap), with dynamic
//! completions for names of sandboxes, profiles and roots.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::{complete, throwaway};

/// Manage sandboxd sandboxes.
#[derive(Parser)]
#[command(
    name = "sandboxctl",
    version,
    about,
    after_help = "Exit status: 0 ok, 1 failure reported by the daemon, 2 usage, 3 daemon not reachable; exec and shell: the command's, 127 not found, 126 not executable."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// List sandboxes: name, state, leader pid.
    List {
        #[arg(long)]
        json: bool,
    },
    /// List profiles, one line each: the description, or why it is invalid.
    Profiles {
        #[arg(long)]
        json: bool,
    },
    /// Start a sandbox from its profile.
    Start {
        #[arg(add = complete::profiles())]
        name: String,
    },
    /// Stop a sandbox (SIGTERM, then SIGKILL after its stop_timeout), or dismiss an ended one.
    Stop {
        #[arg(add = complete::sandboxes())]
        name: String,
    },
    /// Stop and start a sandbox.
    Restart {
        #[arg(add = complete::sandboxes())]
        name: String,
    },
    /// Show one sandbox's properties.
    Status {
        #[arg(add = complete::sandboxes_and_profiles())]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-read every profile (reporting broken ones) and apply running sandboxes' changed
    /// network policies to them without a restart.
    Reload,
    /// Show a sandbox's log: its output and the daemon's lines about it (start, exit,
    /// errors), kept on disk after it ended.
    Logs {
        #[arg(add = complete::sandboxes_and_profiles())]
        name: String,
        /// Keep printing new lines until the sandbox ends
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines
        #[arg(long = "lines", short = 'n', value_name = "N")]
        lines: Option<u32>,
        /// Only lines from this age on (30s, 10m, 2h, 1d) or @SECONDS since the epoch
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Prefix each line with its time (UTC)
        #[arg(long, short)]
        timestamps: bool,
        /// One JSON object per line: seq, time (µs), stream, text
        #[arg(long)]
        json: bool,
    },
    /// List what a sandbox with rootfs.overlay added, changed and deleted in its root.
    Diff {
        #[arg(add = complete::sandboxes())]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Show what a sandbox's proxy refused (destination, port, reason), oldest first.
    Netlog {
        #[arg(add = complete::sandboxes())]
        name: String,
        /// Keep running and print refusals as they happen
        #[arg(long, short)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Open a shell (or run COMMAND) on a new terminal inside a running sandbox.
    Shell {
        #[arg(add = complete::sandboxes())]
        name: String,
        /// User inside [default: the profile's process.user, else root]
        #[arg(long)]
        user: Option<String>,
        /// Working directory inside [default: the profile's process.cwd, else the home]
        #[arg(long, value_name = "DIR")]
        cwd: Option<String>,
        /// The command and its arguments (with or without a `--` before them)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run a command inside a running sandbox; exits with its status. With a terminal on
    /// both stdin and stdout it gets a pty, otherwise its stdio streams (works in pipes).
    Exec {
        #[arg(add = complete::sandboxes_and_profiles())]
        name: String,
        /// User inside [default: the profile's process.user, else root]
        #[arg(long)]
        user: Option<String>,
        /// Start the sandbox first unless it runs
        #[arg(long)]
        start: bool,
        /// Add NAME=VALUE to the command's environment (repeatable)
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Working directory inside [default: the profile's process.cwd, else the home]
        #[arg(long, value_name = "DIR")]
        cwd: Option<String>,
        /// The command and its arguments (with or without a `--` before them)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Run COMMAND in a new throwaway sandbox, in the current folder (bound read-write),
    /// on a copy-on-write root; the sandbox is removed when COMMAND ends. Exits with its
    /// status.
    Run(throwaway::RunArgs),
    /// Write a desktop entry (app menu launcher) that runs COMMAND, or the app an installed
    /// entry describes (--from), in the sandbox.
    DesktopEntry {
        #[arg(add = complete::sandboxes_and_profiles())]
        name: String,
        /// The launcher's title [default: "PROGRAM (NAME)", or the app's names with "(NAME)"]
        #[arg(long)]
        title: Option<String>,
        /// Icon name or path [default: the app's]
        #[arg(long)]
        icon: Option<String>,
        /// An installed app's entry (e.g. /usr/share/applications/firefox-esr.desktop):
        /// its name, icon, MIME types, categories and command, %u/%f passed through
        #[arg(long, value_name = "APP.desktop", conflicts_with = "command")]
        from: Option<PathBuf>,
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            required_unless_present = "from"
        )]
        command: Vec<String>,
    },
    /// Check this machine and session for what sandboxd needs, and say what to fix.
    Doctor,
    /// Root file systems under $XDG_DATA_HOME/sandboxd/rootfs.
    Rootfs {
        #[command(subcommand)]
        action: RootfsCmd,
    },
    /// Validate a profile file or a profile by name, without the daemon.
    Check {
        #[arg(add = complete::profiles())]
        profile: String,
    },
    /// Print the script that makes SHELL complete commands, options and the names of
    /// profiles, sandboxes and roots (`make install` installs it for bash, zsh and fish).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
pub enum RootfsCmd {
    /// Unpack a tar archive (e.g. `docker export`, optionally compressed), a directory, or
    /// an image archive (`docker save`, OCI layout or oci-archive), keeping its owners as
    /// the sandbox will see them.
    Import {
        name: String,
        source: PathBuf,
        /// Unpack for profiles whose process.user is USER (a name in the archive's
        /// /etc/passwd, or a uid): that user will be you ("keep-id")
        #[arg(long)]
        user: Option<String>,
    },
    /// Pull an OCI image from a registry (e.g. docker.io/library/archlinux:latest) into a
    /// root file system, and write a starter profile that runs it as its config says.
    Pull {
        reference: String,
        /// The root's (and the starter profile's) name; default: the repository's last part
        #[arg(long)]
        name: Option<String>,
        /// OS/ARCH[/VARIANT] to pick from a multi-platform image; default: this machine's
        #[arg(long)]
        platform: Option<String>,
        /// Verify the registry's certificate (false: any certificate, or plain HTTP; also
        /// `insecure = true` for the registry in registries.conf)
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        tls_verify: bool,
        /// Unpack for profiles whose process.user is USER ("keep-id", as for import)
        #[arg(long)]
        user: Option<String>,
        /// Print progress and the result as JSON lines, nothing else
        #[arg(long)]
        json: bool,
    },
    /// Remove cached image blobs that no root uses any more.
    Prune,
    /// List imported root file systems.
    List,
    /// Remove a root file system (its files may belong to your subordinate ids).
    Remove {
        #[arg(add = complete::roots())]
        name: String,
    },
    /// Applies image layers to a tree; run by pull and import inside the user namespace.
    #[command(hide = true)]
    ApplyLayers { into: PathBuf, layers: Vec<PathBuf> },
}
