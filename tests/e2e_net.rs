//! The transparent proxy end to end: real sandboxes whose only way out is the daemon, a
//! test "internet" in a network namespace these tests create (203.0.113.0/24 and
//! 2001:db8:113::/64, reached from the host over a veth pair), and probes run inside
//! the sandboxes with the host's python3 (`tests/net/client.py`).

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::net::*;
use common::{bus_latency, latency_result, lock, root, session, Session, USER};

fn counter(s: &Session, name: &str, key: &str) -> u64 {
    s.status(name).unwrap()[key].as_u64().unwrap()
}

/// A TCP service on the host (all addresses) that greets and closes; bounded to 60 s.
struct HostService {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostService {
    /// On every address of the host.
    fn start() -> Self {
        Self::start_on("0.0.0.0")
    }

    fn start_on(address: &str) -> Self {
        let l = TcpListener::bind((address, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            while !flag.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(60) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        use std::io::Write;
                        let _ = c.write_all(b"host\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HostService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A non-loopback address of the host outside the test internet (its LAN address).
fn other_host_address() -> Option<IpAddr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name != "lo" && !a.interface_name.starts_with("sbxtest"))
        .filter_map(|a| a.address?.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())))
        .next()
}

#[test]
fn large_transfers_and_udp_through_the_proxy_v4_and_v6() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    proxied_profile(s, "net-bulk", ALLOW_INET);
    s.ctl_ok(&["start", "net-bulk"]);

    let big: u64 = 256 << 20;
    let want = format!("{big} {}", Internet::expected_sha(big));
    assert_eq!(
        probe(s, "net-bulk", &["download", INET_V4, &big.to_string()]),
        want
    );
    assert_eq!(
        probe(s, "net-bulk", &["download", INET_V6, &big.to_string()]),
        want
    );
    let up = (64u64 << 20).to_string();
    assert_eq!(probe(s, "net-bulk", &["upload", INET_V4, &up]), "ok");
    assert_eq!(probe(s, "net-bulk", &["upload", INET_V6, &up]), "ok");
    assert_eq!(probe(s, "net-bulk", &["udp", INET_V4, "1000"]), "1000");
    assert_eq!(probe(s, "net-bulk", &["udp", INET_V6, "1000"]), "1000");

    // Both downloads and uploads were counted (plus the UDP echoes both ways).
    assert!(counter(s, "net-bulk", "bytes_received") >= 2 * big);
    assert!(counter(s, "net-bulk", "bytes_sent") >= 2 * (64 << 20));
    assert_eq!(counter(s, "net-bulk", "connections_denied"), 0);
    let helper = helper_of(s.leader_of("net-bulk")).expect("a netns helper");
    s.ctl_ok(&["stop", "net-bulk"]);
    // The helper ends with its sandbox.
    s.wait_for("the helper to exit", Duration::from_secs(5), || {
        (!common::alive(helper)).then_some(())
    });
    s.remove_profile("net-bulk");
}

#[test]
fn the_host_and_private_ranges_are_refused_at_once_unless_allowed() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    let host = HostService::start();
    let port = host.port.to_string();
    proxied_profile(s, "net-deny", ALLOW_INET);
    s.ctl_ok(&["start", "net-deny"]);

    // The host's address inside an allowed CIDR, its other address, a private address.
    let mut targets = vec![
        HOST_V4.to_string(),
        "10.1.2.3".into(),
        "192.168.77.1".into(),
    ];
    targets.extend(other_host_address().map(|a| a.to_string()));
    // Refused at the SYN (ECONNREFUSED at connect), as a closed port would be.
    for t in &targets {
        let out = probe(s, "net-deny", &["connect", t, &port]);
        let (outcome, ms) = out.split_once(' ').unwrap();
        assert_eq!(outcome, "refused", "{t}:{port} must be refused: {out}");
        assert!(
            ms.parse::<u64>().unwrap() < 50,
            "{t}: refused after {ms} ms"
        );
    }
    // A datagram to a refused address: ICMP port unreachable, ECONNREFUSED on a
    // connected socket (IPv4 and IPv6).
    for t in ["192.168.77.1", "2001:db8::77", HOST_V4] {
        let out = probe(s, "net-deny", &["udpconnect", t, "53"]);
        let (outcome, ms) = out.split_once(' ').unwrap();
        assert_eq!(outcome, "refused", "udp {t}: {out}");
        assert!(
            ms.parse::<u64>().unwrap() < 50,
            "udp {t}: refused after {ms} ms"
        );
    }
    // curl sees a refused connection (exit 7), not "Recv failure: Connection reset".
    let url = format!("http://{HOST_V4}:{port}/");
    let out = s.ctl(&[
        "exec",
        "net-deny",
        "--",
        "curl",
        "-sS",
        "--max-time",
        "5",
        &url,
    ]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut denied = targets.len() as u64 + 4;
    assert_eq!(counter(s, "net-deny", "connections_denied"), denied);
    let log = s.ctl_ok(&["netlog", "net-deny"]);
    assert!(
        log.contains(&format!("10.1.2.3:{port}")) && log.contains("a private range"),
        "{log}"
    );
    assert!(log.contains("192.168.77.1:53"), "{log}");
    // The test internet itself is allowed and reachable.
    assert!(probe(s, "net-deny", &["connect", INET_V4, "8000"]).starts_with("ok:HTTP"));
    // An address the host gains while the sandbox runs is the host's from then on, even
    // inside the allowed CIDR (dialing it would reach the host service).
    // The proxy judges it with the host's addresses of the moment; the SYN rules
    // follow the change within moments.
    root(Command::new("ip").args(["addr", "add", "203.0.113.77/32", "dev", "sbxtest0"]));
    let out = s.wait_for(
        "the new host address refused",
        Duration::from_secs(5),
        || {
            let out = probe(s, "net-deny", &["connect", "203.0.113.77", &port]);
            denied += 1;
            assert!(
                out.starts_with("refused ") || out.starts_with("reset "),
                "a new host address must be refused: {out}"
            );
            out.starts_with("refused ").then_some(out)
        },
    );
    assert!(
        out.split_once(' ').unwrap().1.parse::<u64>().unwrap() < 50,
        "{out}"
    );
    assert_eq!(counter(s, "net-deny", "connections_denied"), denied);
    let log = s.ctl_ok(&["netlog", "net-deny"]);
    let last = log.lines().last().unwrap();
    assert!(
        last.contains(&format!("203.0.113.77:{port}")) && last.contains("the host itself"),
        "{log}"
    );
    s.ctl_ok(&["stop", "net-deny"]);

    proxied_profile(s, "net-host", &format!("{ALLOW_INET}\nallow_host = true"));
    s.ctl_ok(&["start", "net-host"]);
    let out = probe(s, "net-host", &["connect", HOST_V4, &port]);
    assert!(
        out.starts_with("ok:host "),
        "allow_host must reach the host: {out}"
    );
    s.ctl_ok(&["stop", "net-host"]);
    s.remove_profile("net-deny");
    s.remove_profile("net-host");
}

#[test]
fn half_close_and_two_thousand_concurrent_connections() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    proxied_profile(s, "net-many", ALLOW_INET);
    s.ctl_ok(&["start", "net-many"]);
    assert_eq!(
        probe(s, "net-many", &["halfclose", INET_V4, "3000000"]),
        "ok"
    );
    assert_eq!(probe(s, "net-many", &["halfclose", INET_V6, "1"]), "ok");
    assert_eq!(
        probe(s, "net-many", &["concurrent", INET_V4, "2000"]),
        "2000"
    );
    // Every connection was closed again.
    s.wait_for("connections to close", Duration::from_secs(10), || {
        (counter(s, "net-many", "connections_active") == 0).then_some(())
    });
    s.ctl_ok(&["stop", "net-many"]);
    s.remove_profile("net-many");
}

#[test]
fn a_stalled_reader_does_not_slow_another_transfer() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    proxied_profile(s, "net-stall", ALLOW_INET);
    s.ctl_ok(&["start", "net-stall"]);
    let out = probe(
        s,
        "net-stall",
        &["stall", INET_V4, &(64u64 << 20).to_string()],
    );
    let (unloaded, loaded) = out.split_once(' ').unwrap();
    let (unloaded, loaded): (f64, f64) = (unloaded.parse().unwrap(), loaded.parse().unwrap());
    assert!(
        loaded < 2.0 * unloaded,
        "a transfer took {loaded:.3} s next to a stalled reader, {unloaded:.3} s alone"
    );
    s.ctl_ok(&["stop", "net-stall"]);
    s.remove_profile("net-stall");
}

#[test]
fn killing_a_helper_cuts_only_its_sandbox_off() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    proxied_profile(s, "net-a", ALLOW_INET);
    proxied_profile(s, "net-b", ALLOW_INET);
    s.ctl_ok(&["start", "net-a"]);
    s.ctl_ok(&["start", "net-b"]);
    assert!(probe(s, "net-a", &["connect", INET_V4, "8000"]).starts_with("ok:HTTP"));
    let helper = helper_of(s.leader_of("net-a")).expect("net-a has a netns helper");
    let title = std::fs::read(format!("/proc/{helper}/cmdline")).unwrap();
    assert!(
        title.starts_with(b"sandboxd: netns helper\0"),
        "named in ps"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    s.wait_for("the helper to be gone", Duration::from_secs(5), || {
        (!common::alive(helper)).then_some(())
    });
    // Give the daemon a moment to close the sandbox's listeners.
    s.wait_for("net-a to lose its network", Duration::from_secs(5), || {
        let out = probe(s, "net-a", &["connect", INET_V4, "8000"]);
        (!out.starts_with("ok")).then_some(())
    });
    let out = probe(s, "net-a", &["connect", INET_V4, "8000"]);
    assert!(
        out.starts_with("refused") || out.starts_with("reset"),
        "{out}"
    );
    assert_eq!(probe(s, "net-a", &["udp", INET_V4, "3"]), "0");
    // The daemon serves, the other sandbox still has its network.
    assert_eq!(s.status("net-a").unwrap()["state"], "running");
    assert!(probe(s, "net-b", &["connect", INET_V4, "8000"]).starts_with("ok:HTTP"));
    let big = (16u64 << 20).to_string();
    assert!(probe(s, "net-b", &["download", INET_V4, &big]).starts_with(&big));
    s.ctl_ok(&["stop", "net-a"]);
    s.ctl_ok(&["stop", "net-b"]);
    s.remove_profile("net-a");
    s.remove_profile("net-b");
}

#[test]
fn root_inside_cannot_change_the_network_setup() {
    let _l = lock();
    let s = session();
    s.ready();
    proxied_profile(s, "net-root", ALLOW_INET);
    s.ctl_ok(&["start", "net-root"]);
    let priv_ = probe(s, "net-root", &["privileged"]);
    for line in [
        "ip_transparent: EPERM",
        "raw_socket: EPERM",
        "packet_socket: EPERM",
        "cap_net_admin: no",
        "cap_net_raw: no",
    ] {
        assert!(priv_.lines().any(|l| l == line), "{line:?} not in {priv_}");
    }
    let try_ = |args: &[&str]| {
        let mut all = vec!["exec", "net-root", "--"];
        all.extend_from_slice(args);
        s.ctl(&all)
    };
    for attempt in [
        &["/usr/sbin/ip", "link", "set", "sbx0", "down"][..],
        &["/usr/sbin/ip", "addr", "add", "10.9.9.9/32", "dev", "sbx0"],
        &["/usr/sbin/ip", "route", "replace", "default", "dev", "sbx1"],
        &["/usr/sbin/ip", "rule", "del", "fwmark", "0x5bd"],
        &["/usr/sbin/nft", "delete", "table", "inet", "sandboxd"],
        &["/usr/sbin/nft", "flush", "ruleset"],
    ] {
        let out = try_(attempt);
        assert!(!out.status.success(), "{attempt:?} succeeded inside");
        let err = common::stderr(&out);
        // The kernel refuses the netlink changes (no CAP_NET_ADMIN); nf_tables is not even
        // reachable: the seccomp filter refuses its netlink socket.
        let why = if attempt[0].ends_with("nft") {
            "Protocol not supported"
        } else {
            "Operation not permitted"
        };
        assert!(err.contains(why), "{attempt:?}: {err}");
    }
    // Everything is as the helper made it.
    let leader = s.leader_of("net-root").to_string();
    let rules = root(Command::new("nsenter").args(["-t", &leader, "-n", "nft", "list", "ruleset"]));
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(rules.contains("tproxy to :1"), "{rules}");
    let route = s.ctl_ok(&["exec", "net-root", "--", "/usr/sbin/ip", "route"]);
    assert!(route.contains("default dev sbx0"), "{route}");
    s.ctl_ok(&["stop", "net-root"]);
    s.remove_profile("net-root");
}

#[test]
fn mode_none_has_loopback_only() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    s.write_profile(
        "net-none",
        "[rootfs]\nhost = true\n\n[network]\nmode = \"none\"\n",
    );
    s.ctl_ok(&["start", "net-none"]);
    let links = s.ctl_ok(&["exec", "net-none", "--", "/usr/sbin/ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains(": lo:"), "{links}");
    assert!(helper_of(s.leader_of("net-none")).is_none());
    for t in [INET_V4, INET_V6, HOST_V4, "127.0.0.1"] {
        let out = probe(s, "net-none", &["connect", t, "8000"]);
        assert!(
            out.starts_with("unreachable") || out.starts_with("refused"),
            "{t}: {out}"
        );
    }
    s.ctl_ok(&["stop", "net-none"]);
    s.remove_profile("net-none");
}

#[test]
fn connection_and_flow_limits_refuse_the_excess() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    proxied_profile(
        s,
        "net-limits",
        &format!("{ALLOW_INET}\nmax_connections = 5\nmax_udp_flows = 3"),
    );
    s.ctl_ok(&["start", "net-limits"]);
    assert_eq!(probe(s, "net-limits", &["hold", INET_V4, "8"]), "5");
    assert_eq!(counter(s, "net-limits", "connections_denied"), 3);
    assert_eq!(probe(s, "net-limits", &["udpflows", INET_V4, "5"]), "3");
    assert_eq!(counter(s, "net-limits", "connections_denied"), 5);
    s.ctl_ok(&["stop", "net-limits"]);
    s.remove_profile("net-limits");
}

#[test]
fn a_restarted_daemon_gives_an_adopted_sandbox_its_network_back() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    proxied_profile(s, "net-adopt", ALLOW_INET);
    s.ctl_ok(&["start", "net-adopt"]);
    let leader = s.leader_of("net-adopt");
    assert!(probe(s, "net-adopt", &["connect", INET_V4, "8000"]).starts_with("ok:HTTP"));
    let old = helper_of(leader).unwrap();
    let daemon = s.daemon_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    // systemd restarts it (Restart=on-failure); it adopts the sandbox and starts a new helper.
    s.wait_for("a new daemon", Duration::from_secs(20), || {
        let pid = s.daemon_pid();
        (pid != 0 && pid != daemon && s.unit_property("ActiveState") == "active").then_some(())
    });
    assert_eq!(
        s.leader_of("net-adopt"),
        leader,
        "the sandbox was not adopted"
    );
    let new = s.wait_for("a new helper", Duration::from_secs(10), || {
        helper_of(leader).filter(|h| *h != old)
    });
    assert!(!common::alive(old), "the old helper outlived its daemon");
    assert!(probe(s, "net-adopt", &["connect", INET_V4, "8000"]).starts_with("ok:HTTP"));
    let big = (16u64 << 20).to_string();
    assert!(probe(s, "net-adopt", &["download", INET_V6, &big]).starts_with(&big));
    s.ctl_ok(&["stop", "net-adopt"]);
    assert!(!common::alive(new));
    s.remove_profile("net-adopt");
}

#[test]
fn refusals_are_logged_announced_and_a_reload_applies_new_policy() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    use_test_dns(s);
    proxied_profile(s, "net-log", ALLOW_INET);
    s.ctl_ok(&["start", "net-log"]);
    let leader = s.leader_of("net-log");
    assert!(probe(s, "net-log", &["connect", INET_V4, "8000"]).starts_with("ok:HTTP"));

    // A client following the log, and one watching the bus signal.
    let ctl = s.bin().join("sandboxctl");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/user-session");
    let follow_out = tempfile::tempfile().unwrap();
    let mut follow = Command::new(script)
        .args(["run", USER])
        .arg(&ctl)
        .args(["netlog", "net-log", "--follow", "--json"])
        .stdout(follow_out.try_clone().unwrap())
        .spawn()
        .unwrap();
    let bus_out = tempfile::tempfile().unwrap();
    let mut monitor = Command::new(script)
        .args([
            "run",
            USER,
            "stdbuf",
            "-oL",
            "busctl",
            "--user",
            "monitor",
            "--json=short",
        ])
        .arg("org.sandboxd.Sandboxd1")
        .stdout(bus_out.try_clone().unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));

    // The edited profile denies the test web server; the running sandbox picks it up.
    proxied_profile(
        s,
        "net-log",
        &format!("{ALLOW_INET}\ndeny = [\"203.0.113.2:8000\"]"),
    );
    s.ctl_ok(&["reload"]);
    let out = probe(s, "net-log", &["connect", INET_V4, "8000"]);
    assert!(out.starts_with("refused "), "denied after reload: {out}");
    // Other ports and the IPv6 address are still allowed; the sandbox never restarted.
    assert_eq!(probe(s, "net-log", &["halfclose", INET_V4, "10"]), "ok");
    assert_eq!(s.leader_of("net-log"), leader);
    let _ = probe(s, "net-log", &["connect", "10.1.2.3", "443"]);

    let read = |f: &std::fs::File| {
        use std::io::{Read, Seek};
        let mut f = f.try_clone().unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        text
    };
    s.wait_for("the followed log", Duration::from_secs(5), || {
        (read(&follow_out).lines().count() >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    for child in [&mut follow, &mut monitor] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = Command::new("pkill")
        .args(["-u", USER, "-f", "netlog net-log|busctl --user monitor"])
        .status();

    let followed: Vec<serde_json::Value> = read(&follow_out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(followed[0]["destination"], INET_V4);
    assert_eq!(followed[0]["port"], 8000);
    assert_eq!(followed[0]["reason"], "matches network.deny");
    assert_eq!(followed[1]["destination"], "10.1.2.3");
    assert!(followed[1]["reason"]
        .as_str()
        .unwrap()
        .contains("allow_lan"));

    let signals: Vec<serde_json::Value> = read(&bus_out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["member"] == "ConnectionDenied")
        .collect();
    assert_eq!(signals.len(), 2, "{signals:?}");
    assert_eq!(
        signals[0]["payload"]["data"],
        serde_json::json!(["net-log", INET_V4, 8000, "matches network.deny"])
    );

    // The history without --follow, as text.
    let log = s.ctl_ok(&["netlog", "net-log"]);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains("203.0.113.2:8000") && lines[0].contains("network.deny"),
        "{log}"
    );
    assert!(lines[1].contains("10.1.2.3:443"), "{log}");
    assert_eq!(counter(s, "net-log", "connections_denied"), 2);
    // The daemon's log line carries the fields (journal fields where journald runs).
    let log = std::fs::read_to_string(s.daemon_log()).unwrap();
    assert!(
        log.lines().any(|l| l.contains("connection denied")
            && l.contains("SANDBOX=\"net-log\"")
            && l.contains("DESTINATION=\"203.0.113.2\"")
            && l.contains("PORT=8000")
            && l.contains("REASON=\"matches network.deny\"")),
        "no structured denial line in the daemon's log"
    );
    // A reload that opens a CIDR makes it reachable at once, without a restart (the
    // address rules are in place when the reload returns).
    proxied_profile(s, "net-log", r#"allow = ["2001:db8:113::/64"]"#);
    s.ctl_ok(&["reload"]);
    let out = probe(s, "net-log", &["connect", INET_V4, "8000"]);
    assert!(out.starts_with("refused "), "{out}");
    proxied_profile(s, "net-log", ALLOW_INET);
    s.ctl_ok(&["reload"]);
    let out = probe(s, "net-log", &["connect", INET_V4, "8000"]);
    assert!(out.starts_with("ok:HTTP"), "{out}");
    assert_eq!(s.leader_of("net-log"), leader);
    s.ctl_ok(&["stop", "net-log"]);
    s.remove_profile("net-log");
}

/// Points the daemon's resolver at the test internet's DNS server (restarting the daemon
/// when that changes its configuration).
fn use_test_dns(s: &Session) {
    let dir = s.home.join(".config/sandboxd");
    let file = dir.join("sandboxd.toml");
    let want = format!("dns_servers = [\"{INET_V4}\"]\n");
    if std::fs::read_to_string(&file).ok().as_deref() != Some(want.as_str()) {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&file, want).unwrap();
        root(
            Command::new("chown")
                .args(["-R", &format!("{USER}:{USER}")])
                .arg(&dir),
        );
        s.stop_daemon();
        s.start_daemon();
    }
}

/// The first bytes to a name's address must not ask for another host: a TLS ClientHello
/// whose SNI, or an HTTP request whose `Host`, names a host the policy does not allow is
/// refused, with its reason in netlog; naming the allowed name passes; a ClientHello
/// without SNI passes unless `require_sni`, which a reload turns on.
#[test]
fn sni_and_host_must_name_an_allowed_host() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = named_sandbox(s, "net-sni", "allow = [\"allowed.test\"]");
    let tls = |sni: &str| probe(s, "net-sni", &["tls", "allowed.test", "8443", sni]);
    let host = |name: &str| probe(s, "net-sni", &["hostheader", "allowed.test", "8000", name]);
    assert_eq!(tls("allowed.test"), "ok:HTTP/1.0_200_OK");
    assert_eq!(tls("other.test"), "reset");
    assert_eq!(tls("-"), "ok:HTTP/1.0_200_OK");
    assert_eq!(host("allowed.test:8000"), "ok:HTTP/1.0_200_OK");
    assert_eq!(host("other.test"), "reset");
    let log = s.ctl_ok(&["netlog", "net-sni"]);
    assert!(
        log.contains("sni-mismatch") && log.contains("host-mismatch") && log.contains("other.test"),
        "{log}"
    );
    proxied_profile(
        s,
        "net-sni",
        "allow = [\"allowed.test\"]\nrequire_sni = true",
    );
    s.ctl_ok(&["reload"]);
    assert_eq!(tls("-"), "reset");
    assert_eq!(tls("allowed.test"), "ok:HTTP/1.0_200_OK");
    assert!(s.ctl_ok(&["netlog", "net-sni"]).contains("sni-missing"));
    s.ctl_ok(&["stop", "net-sni"]);
    s.remove_profile("net-sni");
}

/// Other record types of allowed names are the test DNS server's, with the addresses it
/// added left out (SRV, TXT, MX); an answer too long for the client's 1232-byte datagram
/// is truncated and comes whole over TCP; a denied name is NXDOMAIN whatever the type.
#[test]
fn other_record_types_of_allowed_names_come_from_upstream() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = named_sandbox(
        s,
        "net-records",
        "allow = [\"allowed.test\", \"*.allowed.test\"]",
    );
    let ask = |name: &str, kind: &str| probe(s, "net-records", &["records", name, kind]);
    assert_eq!(
        ask("_svc._tcp.allowed.test", "SRV"),
        "0 udp 0 srv:1,5,8000,allowed.test"
    );
    assert_eq!(ask("allowed.test", "TXT"), "0 udp 0 txt:15:v=sandbo");
    assert_eq!(ask("allowed.test", "MX"), "0 udp 0 mx:10,mail.allowed.test");
    assert_eq!(ask("big.allowed.test", "TXT"), "0 tcp 0 txt:1992:000xxxxx");
    assert_eq!(ask("other.test", "TXT"), "3 udp 0");
    s.ctl_ok(&["stop", "net-records"]);
    s.remove_profile("net-records");
}

/// The test internet up, the daemon resolving with its DNS server, and sandbox `name`
/// started with `network` (the [network] table's keys); the internet lives as long as
/// what this returns.
fn named_sandbox(s: &Session, name: &str, network: &str) -> Internet {
    let inet = Internet::up();
    use_test_dns(s);
    proxied_profile(s, name, network);
    s.ctl_ok(&["start", name]);
    inet
}

#[test]
fn names_are_answered_by_the_daemon_and_judged_by_name() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    use_test_dns(s);
    let local = HostService::start_on("127.0.0.1");
    let other_local = HostService::start_on("127.0.0.1");
    let (port, other_port) = (local.port.to_string(), other_local.port.to_string());
    proxied_profile(
        s,
        "net-names",
        &format!(
            "allow = [\"allowed.test\", \"*.wild.test:8000\", \"lan.test\", \"host.test\"]\n\
             deny = [\"bad.wild.test\", \"allowed.test:7008\"]\nallow_host = [{port}]"
        ),
    );
    s.ctl_ok(&["start", "net-names"]);

    // An allowed name gets a synthetic address and reaches its server by name.
    let synthetic = probe(s, "net-names", &["resolve", "allowed.test"]);
    assert!(synthetic.starts_with("100.89."), "{synthetic}");
    assert!(probe(s, "net-names", &["connect", "allowed.test", "8000"]).starts_with("ok:HTTP"));
    let page = s.ctl_ok(&[
        "exec",
        "net-names",
        "--",
        "curl",
        "-sS",
        "-m",
        "5",
        "http://allowed.test:8000/hello",
    ]);
    assert_eq!(page, "hello\n");
    let out = s.ctl(&[
        "exec",
        "net-names",
        "--",
        "curl",
        "-sS",
        "-m",
        "5",
        "http://other.test:8000/hello",
    ]);
    assert!(
        common::stderr(&out).contains("Could not resolve host"),
        "{}",
        common::stderr(&out)
    );
    let (rcode, v6) = {
        let out = probe(s, "net-names", &["dns", "allowed.test", "AAAA", "tcp"]);
        let mut w = out.split(' ');
        (
            w.next().unwrap().to_string(),
            w.next().unwrap_or("").to_string(),
        )
    };
    assert_eq!(rcode, "0");
    assert!(v6.starts_with("fd5a:5bd0:ffff::"), "{v6}");
    // Names the policy does not allow do not resolve.
    for name in ["other.test", "shared.test", "bad.wild.test", "wild.test"] {
        assert_eq!(
            probe(s, "net-names", &["resolve", name]),
            "nxdomain",
            "{name}"
        );
    }
    assert_eq!(
        probe(s, "net-names", &["dns", "other.test", "A", "tcp"]),
        "3"
    );
    // The real address of allowed.test (as the host knows it), which shared.test shares,
    // is judged by the address rules alone: refused.
    let out = probe(s, "net-names", &["connect", PUBLIC_V4, "8000"]);
    assert!(out.starts_with("refused "), "{out}");
    // Wildcards and ports; deny wins over allow.
    assert!(probe(s, "net-names", &["connect", "a.wild.test", "8000"]).starts_with("ok:HTTP"));
    assert!(probe(s, "net-names", &["connect", "a.wild.test", "7008"]).starts_with("reset "));
    assert!(probe(s, "net-names", &["connect", "allowed.test", "7008"]).starts_with("reset "));
    // An allowed name cannot be pointed at the LAN or the host (rebinding).
    assert!(probe(s, "net-names", &["connect", "lan.test", "80"]).starts_with("reset "));
    assert!(probe(s, "net-names", &["connect", "host.test", &port]).starts_with("reset "));
    // host.sandbox.internal reaches the host's loopback, on the allowed port only.
    let out = probe(s, "net-names", &["connect", "host.sandbox.internal", &port]);
    assert!(out.starts_with("ok:host "), "{out}");
    // By name, the proxy refuses after the handshake; by address, the SYN is refused.
    for (to, p, how) in [
        ("host.sandbox.internal", &other_port, "reset "),
        (HOST_V4, &other_port, "refused "),
    ] {
        let out = probe(s, "net-names", &["connect", to, p]);
        assert!(out.starts_with(how), "{to}:{p}: {out}");
    }
    let hosts = s.ctl_ok(&["exec", "net-names", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains("host.sandbox.internal"), "{hosts}");

    // Garbage to the resolver: it still answers afterwards, and the daemon serves.
    assert_eq!(probe(s, "net-names", &["dnsgarbage", "300"]), "0");
    let log = s.ctl_ok(&["netlog", "net-names"]);
    for name in [
        "other.test (name lookup)",
        "shared.test (name lookup)",
        "allowed.test:7008",
        "a.wild.test:7008",
    ] {
        assert!(log.contains(name), "{name} not in the log:\n{log}");
    }
    // other.test was asked for three times (A and AAAA, then A over TCP): one record.
    assert_eq!(log.matches("other.test").count(), 1, "{log}");
    s.ctl_ok(&["stop", "net-names"]);
    s.remove_profile("net-names");
}

/// An allowed name that resolves into a special range the host really routes (198.18.0.0/15
/// here to the test internet; 192.0.2.0/24 is this machine's LAN) is refused, with a reason
/// naming the range; with allow_lan it is reached.
#[test]
fn rebinding_into_routed_special_ranges_is_refused() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    use_test_dns(s);
    let routes = String::from_utf8_lossy(&root(Command::new("ip").args(["-4", "route"])).stdout)
        .into_owned();
    assert!(routes.contains("198.18.0.0/24 dev sbxtest0"), "{routes}");
    let allow = r#"allow = ["bench.test", "lanrebind.test"]"#;
    proxied_profile(s, "net-rebind", allow);
    s.ctl_ok(&["start", "net-rebind"]);
    for (name, range) in [
        ("bench.test", "198.18.0.0/15"),
        ("lanrebind.test", "192.0.2.0/24"),
    ] {
        let out = probe(s, "net-rebind", &["connect", name, "8000"]);
        assert!(
            out.starts_with("reset ") || out.starts_with("refused"),
            "{name}: {out}"
        );
        let log = s.ctl_ok(&["netlog", "net-rebind"]);
        let line = log
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not in the log:\n{log}"));
        assert!(line.contains(range) && line.contains("allow_lan"), "{line}");
    }
    s.ctl_ok(&["stop", "net-rebind"]);
    proxied_profile(s, "net-rebind", &format!("{allow}\nallow_lan = true"));
    s.ctl_ok(&["start", "net-rebind"]);
    let out = probe(s, "net-rebind", &["connect", "bench.test", "8000"]);
    assert!(out.starts_with("ok:HTTP"), "{out}");
    s.ctl_ok(&["stop", "net-rebind"]);
    s.remove_profile("net-rebind");
}

/// A port free on the host's loopback right now.
fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

#[test]
fn published_ports_reach_the_sandbox_only_while_it_runs() {
    let _l = lock();
    let s = session();
    s.ready();
    let (tcp, udp) = (free_port(false), free_port(true));
    let server = "import socket, threading\n\
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 9001))\n\
        def echo():\n    while True:\n        d, a = u.recvfrom(2048); u.sendto(b'inside:' + d, a)\n\
        threading.Thread(target=echo, daemon=True).start()\n\
        t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        t.bind(('0.0.0.0', 9000)); t.listen()\n\
        while True:\n    c, _ = t.accept(); c.sendall(b'inside\\n'); c.close()\n";
    let command = serde_json::to_string(&["python3", "-c", server]).unwrap();
    let profile = format!(
        "[rootfs]\nhost = true\n\n[process]\ncommand = {command}\n\n[network]\n\
         publish = [\"127.0.0.1:{tcp}:9000\", \"127.0.0.1:{udp}:9001/udp\"]\n"
    );
    s.write_profile("net-pub", &profile);
    s.ctl_ok(&["start", "net-pub"]);
    let read_tcp = || -> Option<String> {
        use std::io::Read;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", tcp)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut text = String::new();
        c.read_to_string(&mut text).ok()?;
        Some(text)
    };
    let got = s.wait_for("the published TCP port", Duration::from_secs(10), || {
        read_tcp().filter(|t| !t.is_empty())
    });
    assert_eq!(got, "inside\n");
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    u.send_to(b"ping", ("127.0.0.1", udp)).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"inside:ping");

    // The same port for another sandbox: a clear start error.
    s.write_profile(
        "net-pub2",
        &profile.replace(&format!("{udp}:9001/udp"), "1:9001/udp"),
    );
    let out = s.ctl(&["start", "net-pub2"]);
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{tcp}"))
            && err.contains("network.publish[0]"),
        "{err}"
    );
    let _ = s.ctl(&["stop", "net-pub2"]);

    s.ctl_ok(&["stop", "net-pub"]);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", tcp)).is_err(),
        "still listening after stop"
    );
    s.remove_profile("net-pub");
    s.remove_profile("net-pub2");
}

/// A SOCKS5 server (microsocks) inside the test internet on 203.0.113.2:1080, resolving
/// names with the test DNS server, and a unix socket on the host relayed to it (socat).
struct Socks {
    server: Child,
    unix: Child,
    path: std::path::PathBuf,
}

impl Socks {
    fn up(s: &Session) -> Self {
        let etc = Path::new("/etc/netns").join(NETNS);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("resolv.conf"), format!("nameserver {INET_V4}\n")).unwrap();
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                NETNS,
                "microsocks",
                "-i",
                INET_V4,
                "-p",
                "1080",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let path = s.runtime_dir.join("sbxtest-socks.sock");
        let _ = std::fs::remove_file(&path);
        let unix = Command::new("socat")
            .arg(format!(
                "UNIX-LISTEN:{},fork,user={USER},mode=600",
                path.display()
            ))
            .arg(format!("TCP:{INET_V4}:1080"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        s.wait_for("the SOCKS5 server", Duration::from_secs(5), || {
            std::net::TcpStream::connect((INET_V4, 1080)).ok()
        });
        s.wait_for("the SOCKS5 unix socket", Duration::from_secs(5), || {
            path.exists().then_some(())
        });
        Self { server, unix, path }
    }

    fn stop_server(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Drop for Socks {
    fn drop(&mut self) {
        self.stop_server();
        let _ = self.unix.kill();
        let _ = self.unix.wait();
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(NETNS));
    }
}

#[test]
fn upstream_socks5_proxies_carry_the_traffic_and_nothing_goes_direct() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    use_test_dns(s);
    let mut socks = Socks::up(s);
    // Direct, the test web server sees the host's address; through the proxy, the proxy's.
    proxied_profile(s, "net-direct", ALLOW_INET);
    s.ctl_ok(&["start", "net-direct"]);
    assert_eq!(probe(s, "net-direct", &["whoami", INET_V4]), HOST_V4);
    s.ctl_ok(&["stop", "net-direct"]);

    proxied_profile(
        s,
        "net-socks",
        &format!("{ALLOW_INET}\nupstream = \"socks5://{INET_V4}:1080\""),
    );
    proxied_profile(
        s,
        "net-socksh",
        &format!("allow = [\"proxyonly.test\", \"allowed.test\"]\nupstream = \"socks5h://{INET_V4}:1080\""),
    );
    proxied_profile(
        s,
        "net-socksu",
        &format!(
            "allow = [\"allowed.test\"]\nupstream = \"socks5+unix://{}\"",
            socks.path.display()
        ),
    );
    for n in ["net-socks", "net-socksh", "net-socksu"] {
        s.ctl_ok(&["start", n]);
    }
    assert_eq!(probe(s, "net-socks", &["whoami", INET_V4]), INET_V4);
    // UDP cannot go through the upstream: refused, never sent direct.
    assert_eq!(probe(s, "net-socks", &["udp", INET_V4, "3"]), "0");
    // socks5h: the daemon's own resolver cannot resolve proxyonly.test (the test DNS
    // refuses the host), so reaching it proves the proxy resolved the name.
    assert!(probe(s, "net-socksh", &["resolve", "proxyonly.test"]).starts_with("100.89."));
    assert_eq!(
        probe(s, "net-socksh", &["whoami", "proxyonly.test"]),
        INET_V4
    );
    assert_eq!(
        probe(s, "net-socksh", &["resolve", "other.test"]),
        "nxdomain"
    );
    // A SOCKS5 server on a unix socket (it may pick either address of allowed.test; both
    // are its own, where a direct connection would come from the host's).
    let seen = probe(s, "net-socksu", &["whoami", "allowed.test"]);
    assert!(seen == PUBLIC_V4 || seen == PUBLIC_V6, "{seen}");

    // The upstream goes away: connections fail, and none is made directly instead.
    socks.stop_server();
    for (n, to) in [
        ("net-socks", INET_V4),
        ("net-socksh", "proxyonly.test"),
        ("net-socksu", "allowed.test"),
    ] {
        assert_eq!(probe(s, n, &["whoami", to]), "failed", "{n}");
    }
    let log = s.ctl_ok(&["netlog", "net-socks"]);
    assert!(log.contains("the upstream proxy failed"), "{log}");
    for n in ["net-socks", "net-socksh", "net-socksu"] {
        s.ctl_ok(&["stop", n]);
        s.remove_profile(n);
    }
    s.remove_profile("net-direct");
}

#[test]
fn hostile_root_cannot_reach_the_host_other_sandboxes_or_the_lan() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    // Another sandbox's service, published on the host's loopback.
    let published = free_port(false);
    let server = "import socket\nt = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        t.bind(('0.0.0.0', 9000)); t.listen()\nwhile True:\n    c, _ = t.accept(); c.sendall(b'victim\\n'); c.close()\n";
    let command = serde_json::to_string(&["python3", "-c", server]).unwrap();
    s.write_profile(
        "net-victim",
        &format!("[rootfs]\nhost = true\n\n[process]\ncommand = {command}\n\n[network]\npublish = [\"127.0.0.1:{published}:9000\"]\n"),
    );
    s.ctl_ok(&["start", "net-victim"]);
    s.wait_for(
        "the victim's published port",
        Duration::from_secs(10),
        || {
            use std::io::Read;
            let mut c = std::net::TcpStream::connect(("127.0.0.1", published)).ok()?;
            let mut t = String::new();
            c.read_to_string(&mut t).ok()?;
            (t == "victim\n").then_some(())
        },
    );
    let host_service = HostService::start();
    let hp = host_service.port.to_string();
    let pp = published.to_string();
    // The attacker: root inside, default policy (public addresses only).
    s.write_profile("net-attacker", "[rootfs]\nhost = true\n");
    s.ctl_ok(&["start", "net-attacker"]);
    // Names (and the daemon's own addresses) are refused by the proxy after the
    // handshake; addresses at the SYN.
    let (by_name, by_address) = ("reset ", "refused ");
    let mut targets = vec![
        ("host.sandbox.internal", pp.clone(), by_name),
        ("host.sandbox.internal", hp.clone(), by_name),
        (HOST_V4, hp.clone(), by_address),
        (HOST_V4, pp.clone(), by_address),
        ("10.89.0.254", pp.clone(), by_name),
        ("192.168.1.1", "80".to_string(), by_address),
        ("169.254.169.254", "80".to_string(), by_address),
        (INET_V4, "8000".to_string(), by_address),
    ];
    let lan = other_host_address().map(|a| a.to_string());
    if let Some(a) = &lan {
        targets.push((a.as_str(), pp.clone(), by_address));
    }
    for (to, port, how) in &targets {
        let out = probe(s, "net-attacker", &["connect", to, port]);
        assert!(out.starts_with(how), "{to}:{port} must be refused: {out}");
    }
    // Its own loopback is its own: the victim's port is not there, and the proxy's
    // listener refuses a direct connection.
    for (to, port) in [
        ("127.0.0.1", pp.as_str()),
        ("127.0.0.1", "1"),
        ("10.89.0.2", pp.as_str()),
    ] {
        let out = probe(s, "net-attacker", &["connect", to, port]);
        assert!(
            out.starts_with("refused ") || out.starts_with("reset "),
            "{to}:{port}: {out}"
        );
    }
    // Random bytes at the proxy's own listener and at refused destinations: resets, and
    // the daemon and the other sandbox carry on.
    let out = probe(s, "net-attacker", &["garbage", "127.0.0.1", "1", "300"]);
    assert_eq!(out, "reset=300", "{out}");
    let out = probe(s, "net-attacker", &["garbage", "10.1.2.3", "80", "300"]);
    assert_eq!(out, "refused=300", "{out}");
    use std::io::Read;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", published)).unwrap();
    let mut t = String::new();
    c.read_to_string(&mut t).unwrap();
    assert_eq!(t, "victim\n");
    for n in ["net-attacker", "net-victim"] {
        s.ctl_ok(&["stop", n]);
        s.remove_profile(n);
    }
}

#[test]
fn a_connection_flood_leaves_the_daemon_and_other_sandboxes_responsive() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    proxied_profile(s, "net-flood", ALLOW_INET);
    proxied_profile(s, "net-calm", ALLOW_INET);
    s.ctl_ok(&["start", "net-flood"]);
    s.ctl_ok(&["start", "net-calm"]);
    let latency = bus_latency(8);
    let started = std::time::Instant::now();
    // 20 000 connection attempts: half refused by the policy, half to the test internet.
    let refused = probe(s, "net-flood", &["flood", "10.1.2.3", "80", "10000"]);
    assert_eq!(refused, "refused=10000", "{refused}");
    let allowed = probe(s, "net-flood", &["requests", INET_V4, "10000"]);
    assert_eq!(allowed, "ok=10000", "{allowed}");
    // Another sandbox's transfer still completes meanwhile.
    let big = (16u64 << 20).to_string();
    assert!(probe(s, "net-calm", &["download", INET_V4, &big]).starts_with(&big));
    let (worst, calls) = latency_result(latency);
    assert!(
        calls >= 10,
        "only {calls} bus calls in {:?}",
        started.elapsed()
    );
    assert!(worst < 200, "a D-Bus call took {worst} ms during the flood");
    assert!(counter(s, "net-flood", "connections_denied") >= 10_000);
    for n in ["net-flood", "net-calm"] {
        s.ctl_ok(&["stop", n]);
        s.remove_profile(n);
    }
}

#[test]
fn a_gigabyte_written_to_tmpfs_leaves_the_daemon_responsive() {
    let _l = lock();
    let s = session();
    s.ready();
    s.write_profile("net-fill", "[rootfs]\nhost = true\n");
    s.write_profile("net-other", "[rootfs]\nhost = true\n");
    s.ctl_ok(&["start", "net-fill"]);
    s.ctl_ok(&["start", "net-other"]);
    let latency = bus_latency(6);
    let out = s.ctl_ok(&[
        "exec",
        "net-fill",
        "--",
        "/bin/sh",
        "-c",
        "dd if=/dev/zero of=/tmp/fill bs=1M count=1024 2>&1 | tail -n 1; du -m /tmp/fill",
    ]);
    assert!(out.contains("1024\t/tmp/fill"), "{out}");
    // The other sandbox still answers while the first holds a gigabyte in its tmpfs.
    assert_eq!(
        s.ctl_ok(&["exec", "net-other", "--", "/bin/echo", "alive"]),
        "alive\n"
    );
    let (worst, calls) = latency_result(latency);
    assert!(calls >= 10, "only {calls} bus calls");
    assert!(
        worst < 200,
        "a D-Bus call took {worst} ms while a sandbox filled its tmpfs"
    );
    // Stopping frees it: the tmpfs goes with the sandbox.
    s.ctl_ok(&["stop", "net-fill"]);
    s.ctl_ok(&["stop", "net-other"]);
    s.remove_profile("net-fill");
    s.remove_profile("net-other");
}

/// The service run with `LimitNOFILE=N` (a drop-in) until dropped; restarted both times.
struct ServiceLimit<'a>(&'a Session, std::path::PathBuf);

impl<'a> ServiceLimit<'a> {
    fn set(s: &'a Session, n: u64) -> Self {
        let file = s
            .home
            .join(".config/systemd/user/sandboxd.service.d/test-nofile.conf");
        std::fs::write(&file, format!("[Service]\nLimitNOFILE={n}\n")).unwrap();
        s.chown(&file);
        s.user_ok(&["systemctl", "--user", "daemon-reload"]);
        s.user_ok(&["systemctl", "--user", "restart", "sandboxd.service"]);
        Self(s, file)
    }
}

impl Drop for ServiceLimit<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.1);
        let _ = self.0.user(&["systemctl", "--user", "daemon-reload"]);
        let _ = self
            .0
            .user(&["systemctl", "--user", "restart", "sandboxd.service"]);
    }
}

/// The daemon's soft RLIMIT_NOFILE and how many descriptors it holds now.
fn daemon_fds(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (soft, open)
}

/// Three sandboxes each opening connections up to their own limit at once (together more
/// than the daemon has descriptors for): the daemon-wide budget refuses the excess with its
/// reason, the daemon never runs out of descriptors, D-Bus stays fast, and a fourth sandbox
/// can still be exec'd into and download.
#[test]
fn hostile_sandboxes_cannot_exhaust_the_daemons_descriptors() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = Internet::up();
    // A daemon with 4 000 descriptors (a session's limit is often 20 000; a smaller one
    // keeps the load on this 2-core machine small), and three sandboxes whose own limits
    // together need more than that.
    let _limit = ServiceLimit::set(s, 4000);
    const EACH: u64 = 800;
    let hostile = ["net-fd-a", "net-fd-b", "net-fd-c"];
    // RLIMIT_NOFILE of each sandbox: below the daemon's hard limit, enough to hold them.
    let profile = |n: &str, network: &str| {
        s.write_profile(
            n,
            &format!("[rootfs]\nhost = true\n[network]\n{network}\n[limits]\nnofile = 2048\n"),
        );
    };
    for n in hostile {
        profile(n, &format!("{ALLOW_INET}\nmax_connections = {EACH}"));
        s.ctl_ok(&["start", n]);
    }
    profile("net-fd-calm", ALLOW_INET);
    s.ctl_ok(&["start", "net-fd-calm"]);
    let daemon = s.daemon_pid();
    let (limit, _) = daemon_fds(daemon);
    assert_eq!(limit, 4000);
    let share = counter(s, "net-fd-calm", "descriptor_share");
    // Without the budget, the three would need more than the daemon has.
    assert!(
        3 * EACH * 2 > limit,
        "limit {limit}: the test cannot exhaust it"
    );
    assert!(share > 0 && share < limit / 4, "share {share} of {limit}");
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut most, t0) = (0, Instant::now());
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(180) {
                most = most.max(daemon_fds(daemon).1);
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        })
    };
    let latency = bus_latency(12);
    let ctl = s.bin().join("sandboxctl");
    let mut holders: Vec<Child> = hostile
        .iter()
        .map(|n| {
            Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/user-session"))
                .args(["run", USER])
                .arg(&ctl)
                .args([
                    "exec",
                    n,
                    "--",
                    "python3",
                    "-",
                    "holdmany",
                    INET_V4,
                    &EACH.to_string(),
                    "8",
                ])
                .stdin(Stdio::from(
                    std::fs::File::open(scripts().join("client.py")).unwrap(),
                ))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut held = Vec::new();
    for h in &mut holders {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(h.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        held.push(line.trim().parse::<u64>().unwrap_or(0));
    }
    // While all three hold what they could get: the fourth works.
    s.ctl_ok(&["exec", "net-fd-calm", "--", "true"]);
    let big = (4u64 << 20).to_string();
    assert!(probe(s, "net-fd-calm", &["download", INET_V4, &big]).starts_with(&big));
    let using = counter(s, "net-fd-a", "descriptors");
    for h in &mut holders {
        let _ = h.wait();
    }
    let (worst, calls) = latency_result(latency);
    stop.store(true, Ordering::Relaxed);
    let most = sampler.join().unwrap();
    for (n, count) in hostile.iter().zip(&held) {
        assert!(
            *count > 0 && *count * 2 <= share + 2,
            "{n} held {count} connections (share {share} descriptors; held {held:?}, a uses {using}, most {most} of {limit})"
        );
        let log = s.ctl_ok(&["netlog", n]);
        assert!(log.contains("daemon connection budget"), "{n}: {log}");
    }
    assert!(using > 0 && using <= share, "{using} of {share}");
    assert!(
        most < limit,
        "the daemon reached {most} of {limit} descriptors"
    );
    assert!(
        calls >= 5 && worst < 200,
        "D-Bus: {calls} calls, slowest {worst} ms"
    );
    for n in hostile.iter().chain(&["net-fd-calm"]) {
        s.ctl_ok(&["stop", n]);
        s.remove_profile(n);
    }
}

/// `systemctl --user reload sandboxd` re-reads sandboxd.toml: a new `dns_servers` applies
/// to the next lookups, while the daemon and the running sandbox keep their pids.
#[test]
fn a_reload_applies_dns_servers_without_stopping_sandboxes() {
    let _l = lock();
    let s = session();
    s.ready();
    let _inet = named_sandbox(
        s,
        "net-reload",
        "allow = [\"allowed.test\", \"a.wild.test\", \"other.test\"]",
    );
    let (daemon, leader) = (s.daemon_pid(), s.leader_of("net-reload"));
    let rcode = |name: &str| {
        probe(s, "net-reload", &["dns", name, "A", "tcp"])
            .split(' ')
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(rcode("allowed.test"), "0");
    let file = s.home.join(".config/sandboxd/sandboxd.toml");
    let reload = |text: &str, says: &str| {
        std::fs::write(&file, text).unwrap();
        s.chown(&file);
        let before = std::fs::read_to_string(s.daemon_log())
            .unwrap_or_default()
            .len();
        s.user_ok(&["systemctl", "--user", "reload", "sandboxd"]);
        s.wait_for("the reload's log line", Duration::from_secs(10), || {
            let log = std::fs::read_to_string(s.daemon_log()).unwrap_or_default();
            log.get(before..)
                .filter(|new| new.contains("reloaded: ") && new.contains(says))
                .map(|_| ())
        });
    };
    // A server that answers nothing: the next new lookup fails.
    reload(
        "dns_servers = [\"127.0.0.1:9\"]\n",
        "dns_servers now 127.0.0.1:9",
    );
    assert_eq!(rcode("a.wild.test"), "2", "SERVFAIL without a server");
    let log = s.ctl_ok(&["netlog", "net-reload"]);
    let line = log
        .lines()
        .find(|l| l.contains("a.wild.test (name lookup)"))
        .unwrap_or_else(|| panic!("no record of the failed lookup:\n{log}"));
    assert!(
        line.contains("upstream DNS failed (127.0.0.1:9: refused")
            && line.contains("dns_servers in sandboxd.toml"),
        "{line}"
    );
    // Back to the test internet's server: answered again.
    reload(
        &format!("dns_servers = [\"{INET_V4}\"]\n"),
        &format!("dns_servers now {INET_V4}:53"),
    );
    assert_eq!(rcode("other.test"), "0");
    // What cannot change live is named, with the restart it needs.
    reload(
        &format!("dns_servers = [\"{INET_V4}\"]\nlog_size = \"1M\"\n"),
        "log_size changed: applied at the next `systemctl --user restart sandboxd`",
    );
    // A broken file changes nothing and says where it is wrong.
    reload("dns_servers = 7\n", "not applied (the old settings stay)");
    assert_eq!(rcode("a.wild.test"), "0");
    assert_eq!(s.daemon_pid(), daemon, "the daemon was restarted");
    assert_eq!(
        s.leader_of("net-reload"),
        leader,
        "the sandbox was restarted"
    );
    std::fs::write(&file, format!("dns_servers = [\"{INET_V4}\"]\n")).unwrap();
    s.finish("net-reload");
}
