//! Client-side proxies of the daemon's interfaces (the same contract `busctl` sees).

use std::collections::HashMap;
use zbus::proxy;

use zbus::zvariant::{Fd, OwnedFd, OwnedObjectPath, Value};

/// The daemon's well-known name on the session bus.
pub const SERVICE: &str = "org.sandboxd.Sandboxd1";

#[proxy(
    interface = "org.sandboxd.Sandboxd1.Manager",
    default_service = "org.sandboxd.Sandboxd1",
    default_path = "/org/sandboxd/Sandboxd1"
)]
pub trait Manager {
    fn list_profiles(&self) -> zbus::Result<Vec<(String, String, String)>>;
    fn describe_profiles(&self) -> zbus::Result<Vec<(String, String, String, String)>>;
    fn list_sandboxes(&self) -> zbus::Result<Vec<(String, String, u32, OwnedObjectPath)>>;
    fn start_sandbox(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_sandbox(&self, name: &str) -> zbus::Result<()>;
    fn restart_sandbox(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn kill_sandbox(&self, name: &str, signal: i32) -> zbus::Result<()>;
    fn get_sandbox(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload_profiles(&self) -> zbus::Result<()>;
    fn connection_log(&self, name: &str) -> zbus::Result<Vec<(u64, String, u16, String)>>;
    fn diff(&self, name: &str) -> zbus::Result<Vec<(String, String)>>;
    fn run(
        &self,
        profile: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<(String, OwnedObjectPath)>;
    fn signal_process(&self, name: &str, id: u32, signal: i32) -> zbus::Result<()>;
    fn read_log(
        &self,
        name: &str,
        after: u64,
        since: u64,
        max: u32,
    ) -> zbus::Result<Vec<(u64, u64, String, String)>>;
    #[allow(clippy::too_many_arguments)]
    fn exec(
        &self,
        name: &str,
        argv: &[&str],
        options: HashMap<&str, Value<'_>>,
        stdin: Fd<'_>,
        stdout: Fd<'_>,
        stderr: Fd<'_>,
    ) -> zbus::Result<u32>;
    fn open_shell(
        &self,
        name: &str,
        user: &str,
        argv: &[&str],
        env: &[&str],
    ) -> zbus::Result<(OwnedFd, u32)>;
    fn open_terminal(
        &self,
        name: &str,
        argv: &[&str],
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<(OwnedFd, u32)>;
    #[zbus(signal)]
    fn process_exited(&self, name: String, id: u32, status: i32) -> zbus::Result<()>;
    #[zbus(signal)]
    fn connection_denied(
        &self,
        sandbox: String,
        destination: String,
        port: u16,
        reason: String,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn sandbox_new(&self, name: String, path: OwnedObjectPath) -> zbus::Result<()>;
    #[zbus(signal)]
    fn sandbox_removed(
        &self,
        name: String,
        path: OwnedObjectPath,
        result: String,
    ) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.sandboxd.Sandboxd1.Sandbox",
    default_service = "org.sandboxd.Sandboxd1"
)]
pub trait Sandbox {
    fn stop(&self) -> zbus::Result<()>;
    fn restart(&self) -> zbus::Result<OwnedObjectPath>;
    fn kill(&self, signal: i32) -> zbus::Result<()>;
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn leader(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn since(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn profile(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn restarts(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn exit_status(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn security(&self) -> zbus::Result<String>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn connections_active(&self) -> zbus::Result<u32>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn bytes_sent(&self) -> zbus::Result<u64>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn bytes_received(&self) -> zbus::Result<u64>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn connections_denied(&self) -> zbus::Result<u64>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn descriptors(&self) -> zbus::Result<u64>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn descriptor_share(&self) -> zbus::Result<u64>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn name_hits(&self) -> zbus::Result<HashMap<String, u64>>;
}
