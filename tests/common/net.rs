//! The test "internet" and the probes the network tests run inside sandboxes, shared by
//! every test that needs a sandbox's traffic to go somewhere.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{root, Session, USER};

pub const NETNS: &str = "sbxtest-inet";
pub const HOST_V4: &str = "203.0.113.1";
pub const INET_V4: &str = "203.0.113.2";
pub const INET_V6: &str = "2001:db8:113::2";
/// Public addresses the test internet also holds, routed by the host to it alone (for
/// names, which may not resolve into special ranges).
pub const PUBLIC_V4: &str = "1.2.3.4";
pub const PUBLIC_V6: &str = "2a00:1::4";
pub const ALLOW_INET: &str = r#"allow = ["203.0.113.0/24", "2001:db8:113::/64"]"#;

pub fn scripts() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/net"))
}

/// The test "internet": a namespace with servers on 203.0.113.2 and 2001:db8:113::2,
/// linked to the host (203.0.113.1, 2001:db8:113::1). Removed again on drop.
pub struct Internet {
    server: Child,
}

impl Internet {
    pub fn up() -> Self {
        Self::remove();
        let ip = |args: &[&str]| root(Command::new("ip").args(args));
        ip(&["netns", "add", NETNS]);
        ip(&[
            "link", "add", "sbxtest0", "type", "veth", "peer", "name", "sbxtest1", "netns", NETNS,
        ]);
        ip(&["addr", "add", "203.0.113.1/24", "dev", "sbxtest0"]);
        ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:113::1/64",
            "dev",
            "sbxtest0",
            "nodad",
        ]);
        // A benchmarking-range address, routed by the host to this namespace only.
        ip(&["addr", "add", "198.18.0.1/24", "dev", "sbxtest0"]);
        ip(&["link", "set", "sbxtest0", "up"]);
        // Public addresses for the test names, routed to this namespace only (the routes
        // go with the link); nothing is sent before they exist.
        ip(&["route", "add", "1.2.3.0/24", "dev", "sbxtest0"]);
        ip(&["-6", "route", "add", "2a00:1::/64", "dev", "sbxtest0"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", NETNS, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["addr", "add", "203.0.113.2/24", "dev", "sbxtest1"]);
        inside(&["addr", "add", "203.0.113.3/24", "dev", "sbxtest1"]);
        inside(&["addr", "add", "198.18.0.2/24", "dev", "sbxtest1"]);
        inside(&["addr", "add", "1.2.3.4/24", "dev", "sbxtest1"]);
        inside(&[
            "-6",
            "addr",
            "add",
            "2a00:1::4/64",
            "dev",
            "sbxtest1",
            "nodad",
        ]);
        inside(&[
            "-6",
            "addr",
            "add",
            "2001:db8:113::2/64",
            "dev",
            "sbxtest1",
            "nodad",
        ]);
        inside(&["link", "set", "sbxtest1", "up"]);
        let mut server = Command::new("ip")
            .args(["netns", "exec", NETNS, "python3"])
            .arg(scripts().join("internet.py"))
            .arg("serve")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the internet's servers did not start");
        Self { server }
    }

    pub fn remove() {
        let _ = Command::new("ip")
            .args(["link", "del", "sbxtest0"])
            .output();
        let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
    }

    pub fn expected_sha(n: u64) -> String {
        let out = root(
            Command::new("python3")
                .arg(scripts().join("internet.py"))
                .args(["expect", &n.to_string()]),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        Self::remove();
    }
}

/// Runs probe `args` of client.py inside sandbox `name`; returns its one line of output.
pub fn probe(s: &Session, name: &str, args: &[&str]) -> String {
    let script = std::fs::File::open(scripts().join("client.py")).unwrap();
    let ctl = s.bin().join("sandboxctl");
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/user-session"))
        .args(["run", USER])
        .arg(&ctl)
        .args(["exec", name, "--", "python3", "-"])
        .args(args)
        .stdin(Stdio::from(script))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "probe {args:?} in {name} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn proxied_profile(s: &Session, name: &str, network: &str) {
    s.write_profile(
        name,
        &format!("[rootfs]\nhost = true\n\n[network]\n{network}\n\n[limits]\nnofile = 8192\n"),
    );
}

/// The netns helper of sandbox `leader`: a `sandboxd netns-helper` process in the
/// sandbox's network namespace.
pub fn helper_of(leader: u32) -> Option<u32> {
    let net = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let sandbox = net(leader)?;
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.len() >= 2 && args[1] == b"netns-helper"
            }) && net(*pid).as_ref() == Some(&sandbox)
        })
}
