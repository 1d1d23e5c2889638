//! sandboxd: rootless runc sandboxes defined by TOML profiles, supervised by a user daemon
//! and driven over D-Bus.
//!
//! The modules follow the data flow: [`profile`] → [`spec`] → [`runtime`], with the
//! [`supervisor`] in the middle and [`bus`] / [`ctl`] at the edges. [`init`] is the
//! sandbox's pid 1; [`netns`] the helper that sets up a sandbox's network namespace, and
//! [`proxy`] the daemon's side of its only way out.
//!
//! Modules only the crate itself uses are private, so the compiler reports what in them
//! nothing calls; the public ones are what the binaries and the integration tests use.

pub mod bus;
pub mod busproxy;
pub mod cgroups;
pub mod config;
pub mod ctl;
pub mod daemon;
mod environ;
mod fds;
pub mod image;
pub mod init;
pub mod instance;
pub mod logbook;
pub mod logging;
pub mod netns;
mod paths;
pub mod procfs;
pub mod profile;
pub mod proxy;
mod reload;
pub mod runtime;
pub mod seqpacket;
pub mod spec;
pub mod supervisor;

/// Formats an error and its `source()` chain as one line: "outer: inner: innermost".
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}
