//! `status` and `netlog`: what one sandbox is and what it was refused, for people and, with
//! `--json`, for scripts.

use serde_json::json;

use super::proxy::{ManagerProxy, SandboxProxy};
use super::{logs, pid_text, since_text, terminal};

/// `netlog`: the refusals so far, and with `follow` those to come.
pub async fn netlog(
    manager: &ManagerProxy<'_>,
    name: &str,
    follow: bool,
    json: bool,
) -> zbus::Result<()> {
    // Subscribe before reading the history, so nothing falls between the two.
    let mut live = if follow {
        Some(
            manager
                .receive_connection_denied_with_args(&[(0, name)])
                .await?,
        )
    } else {
        None
    };
    let show = |at: u64, dest: &str, port: u16, reason: &str| {
        if json {
            println!(
                "{}",
                json!({"time": at, "sandbox": name, "destination": dest, "port": port, "reason": reason})
            );
        } else {
            let target = if port == crate::proxy::denials::LOOKUP {
                format!("{dest} (name lookup)")
            } else if dest.contains(':') {
                format!("[{dest}]:{port}")
            } else {
                format!("{dest}:{port}")
            };
            println!("{:<10} {target:<40} {reason}", since_text(at));
        }
    };
    let history = manager.connection_log(name).await?;
    if history.is_empty() && !json {
        eprintln!("no refusals");
    }
    for (at, dest, port, reason) in history {
        show(at, &dest, port, &reason);
    }
    if let Some(live) = live.as_mut() {
        use futures_util::StreamExt;
        while let Some(sig) = live.next().await {
            let Ok(a) = sig.args() else { continue };
            show(
                crate::supervisor::now_us(),
                a.destination(),
                *a.port(),
                a.reason(),
            );
        }
    }
    Ok(())
}

/// `status`: one sandbox's state, counters and, when it failed, its last lines.
pub async fn status(
    conn: &zbus::Connection,
    manager: &ManagerProxy<'_>,
    name: &str,
    json: bool,
) -> zbus::Result<()> {
    let path = manager.get_sandbox(name).await?;
    let sb = SandboxProxy::builder(conn).path(path)?.build().await?;
    let (state, leader, since, profile, restarts, exit) = (
        sb.state().await?,
        sb.leader().await?,
        sb.since().await?,
        sb.profile().await?,
        sb.restarts().await?,
        sb.exit_status().await?,
    );
    let (active, sent, received, denied) = (
        sb.connections_active().await?,
        sb.bytes_sent().await?,
        sb.bytes_received().await?,
        sb.connections_denied().await?,
    );
    let hits = sb.name_hits().await?;
    let security = sb.security().await?;
    let (fds, share) = (sb.descriptors().await?, sb.descriptor_share().await?);
    if json {
        println!(
            "{}",
            json!({"name": name, "state": state, "leader": leader, "since": since, "profile": profile, "restarts": restarts, "exit_status": exit, "security": security, "descriptors": fds, "descriptor_share": share,
                   "connections_active": active, "bytes_sent": sent, "bytes_received": received, "connections_denied": denied,
                   "name_hits": hits})
        );
    } else {
        println!("{name}: {state}");
        println!("  leader pid:  {}", pid_text(leader));
        println!("  since:       {}", since_text(since));
        println!(
            "  profile:     {}",
            if profile.is_empty() {
                "(built-in)"
            } else {
                &profile
            }
        );
        println!("  restarts:    {restarts}");
        if !security.is_empty() {
            println!("  security:    {security}");
        }
        if exit >= 0 {
            println!("  exit status: {exit}");
        }
        if state == "failed" {
            let escape = terminal::is_tty(1);
            let tail = logs::tail(manager, name, 8).await;
            if !tail.is_empty() {
                println!("  last lines (sandboxctl logs {name}):");
            }
            for r in &tail {
                println!("    {}", logs::line(r, false, escape));
            }
        }
        println!(
            "  network:     {active} open, {sent} bytes sent, {received} received, {denied} denied"
        );
        if share > 0 {
            println!("  descriptors: {fds} of a {share} share of the daemon's budget");
        }
        let mut hits: Vec<_> = hits.into_iter().collect();
        hits.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (n, count) in hits.iter().take(10) {
            println!("    {count:>8}  {n}");
        }
    }
    Ok(())
}
