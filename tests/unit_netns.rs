//! The netns helper's set-up without root: in a throwaway `unshare --user --map-root-user
//! --net` namespace, the real helper makes its links, addresses, routes, rules and nf_tables
//! table (with a verdict rule set sent as the daemon sends it), checked against golden `ip`
//! and `nft` output (tests/golden/). Where the machine
//! allows no unprivileged user namespaces, or lacks `ip`/`nft`, the test says so and skips.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");

fn have(program: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(program).exists())
}

/// What is left of `ip`/`nft` output once the numbers that differ per run are gone.
fn normalise(text: &str) -> String {
    text.lines()
        // Link-local addresses come from random MAC addresses, with timing-dependent flags.
        .filter(|l| !l.contains("inet6 fe80::"))
        .map(|l| {
            l.split_whitespace()
                .map(|w| {
                    // interface indexes ("3:"), link peers ("sbx1@sbx0") keep their names.
                    if w.ends_with(':') && w[..w.len() - 1].chars().all(|c| c.is_ascii_digit()) {
                        "N:".to_string()
                    } else {
                        w.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn inside(pid: u32, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-U",
            "-n",
            "--preserve-credentials",
            "--",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sorted` for route tables: the kernel lists routes of equal rank in the order the links
/// came up, which varies from run to run; rule and nf_tables order is meaningful and kept.
fn compare(name: &str, got: &str, sorted: bool) {
    let file = Path::new(GOLDEN).join(name);
    let mut got = normalise(got);
    if sorted {
        let mut lines: Vec<&str> = got.lines().collect();
        lines.sort_unstable();
        got = lines.join("\n") + "\n";
    }
    if std::env::var_os("SANDBOXD_BLESS").is_some() {
        std::fs::write(&file, &got).unwrap();
    }
    let want = std::fs::read_to_string(&file).unwrap_or_default();
    assert_eq!(
        want,
        got,
        "{} differs (SANDBOXD_BLESS=1 rewrites it)",
        file.display()
    );
}

#[tokio::test]
async fn the_helper_sets_a_namespace_up_as_the_golden_output_says() {
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!(
            "skipped: this machine allows no unprivileged user namespaces (unshare -rn failed)"
        );
        return;
    }
    if !have("ip") || !have("nft") || !have("nsenter") {
        eprintln!("skipped: ip, nft or nsenter is not installed (iproute2, nftables, util-linux)");
        return;
    }
    let mut target = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = target.id();
    let own = std::fs::read_link("/proc/self/ns/net").ok();
    for _ in 0..200 {
        let joined = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() != own;
        let exec_done =
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.ends_with("sleep"));
        if joined && exec_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut helper = sandboxd::netns::spawn(Path::new(env!("CARGO_BIN_EXE_sandboxd"))).unwrap();
    let ready = helper.client.join(pid, Duration::from_secs(10)).await;
    let mut set_up = ready.map(drop).map_err(|e| sandboxd::error_chain(&e));
    if set_up.is_ok() {
        // A verdict rule set of every shape the daemon makes, read back by `nft` below.
        use sandboxd::netns::Rule;
        let rules = [
            "pass 100.89.0.0/16",
            "refuse d 203.0.113.2/32 8000-8000",
            "refuse h 127.0.0.0/8",
            "pass 192.168.1.0/24 22-80",
            "refuse s3 fc00::/7",
            "pass ::/0",
            "refuse n any",
        ];
        let rules: Vec<Rule> = rules.iter().map(|r| r.parse().unwrap()).collect();
        set_up = helper
            .client
            .set_rules(&rules)
            .await
            .map_err(|e| sandboxd::error_chain(&e));
    }
    let result = std::panic::catch_unwind(|| {
        set_up.clone().expect("the helper set the namespace up");
        compare("netns-addr.txt", &inside(pid, &["ip", "-o", "addr"]), false);
        compare(
            "netns-route.txt",
            &inside(pid, &["ip", "-4", "route", "show", "table", "all"]),
            true,
        );
        compare(
            "netns-route6.txt",
            &inside(pid, &["ip", "-6", "route", "show", "table", "all"]),
            true,
        );
        compare("netns-rule.txt", &inside(pid, &["ip", "rule"]), false);
        compare(
            "netns-rule6.txt",
            &inside(pid, &["ip", "-6", "rule"]),
            false,
        );
        compare(
            "netns-nft.txt",
            &inside(pid, &["nft", "list", "ruleset"]),
            false,
        );
    });
    let _ = helper.child.start_kill();
    let _ = helper.child.wait().await;
    let _ = target.kill();
    let _ = target.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
