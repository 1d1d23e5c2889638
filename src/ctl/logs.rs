//! `sandboxctl logs`: a sandbox's log from the daemon's `ReadLog`, followed by asking again
//! for what came after the last record seen.

use std::time::Duration;

use serde_json::json;

use super::proxy::ManagerProxy;
use super::terminal;

/// How often `--follow` asks for new records.
const POLL: Duration = Duration::from_millis(200);

pub struct Options {
    pub follow: bool,
    /// Only the last N records.
    pub lines: Option<u32>,
    /// Only records from this time (µs since the epoch) on.
    pub since: u64,
    pub timestamps: bool,
    pub json: bool,
}

type Record = (u64, u64, String, String);

/// Prints the log of `name`; with `follow`, until the sandbox is no longer active.
pub async fn show(manager: &ManagerProxy<'_>, name: &str, opts: &Options) -> zbus::Result<()> {
    let escape = terminal::is_tty(1);
    let records = manager
        .read_log(name, 0, opts.since, opts.lines.unwrap_or(0))
        .await?;
    let mut last = 0;
    for r in &records {
        print(r, opts, escape);
        last = r.0;
    }
    if !opts.follow {
        if records.is_empty() && !opts.json {
            eprintln!("(the log of {name} is empty)");
        }
        return Ok(());
    }
    loop {
        let active = manager
            .list_sandboxes()
            .await?
            .iter()
            .any(|(n, state, _, _)| {
                n == name && matches!(state.as_str(), "starting" | "running" | "stopping")
            });
        for r in manager.read_log(name, last, 0, 0).await? {
            print(&r, opts, escape);
            last = r.0;
        }
        if !active {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The last `n` records of `name`, for `status`; empty when there is no log.
pub async fn tail(manager: &ManagerProxy<'_>, name: &str, n: u32) -> Vec<Record> {
    manager.read_log(name, 0, 0, n).await.unwrap_or_default()
}

/// One record as a line: output as it was, the daemon's own lines marked as such.
pub fn line(r: &Record, timestamps: bool, escape: bool) -> String {
    let (_, usec, stream, text) = r;
    let text = if escape {
        escape_controls(text)
    } else {
        text.clone()
    };
    let mut out = String::new();
    if timestamps {
        out.push_str(&rfc3339(*usec));
        out.push(' ');
    }
    if stream == "sandboxd" {
        out.push_str("-- sandboxd: ");
    }
    out.push_str(&text);
    out
}

fn print(r: &Record, opts: &Options, escape: bool) {
    if opts.json {
        let (seq, usec, stream, text) = r;
        println!(
            "{}",
            json!({"seq": seq, "time": usec, "stream": stream, "text": text})
        );
    } else {
        println!("{}", line(r, opts.timestamps, escape));
    }
}

/// A sandbox's text on the user's terminal: control characters (escape sequences could
/// retitle, recolour or, on some terminals, answer back into the shell) shown as `\xNN`.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (c.is_control() && c != '\t') || c == '\u{7f}' {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `--since`: `30s`, `10m`, `2h`, `1d` ago, or `@SECONDS` since the epoch; as µs.
pub fn parse_since(text: &str, now_us: u64) -> Result<u64, String> {
    let wrong = || {
        format!("--since {text:?}: expected an age such as 30s, 10m, 2h, 1d, or @SECONDS since the epoch")
    };
    if let Some(secs) = text.strip_prefix('@') {
        return secs
            .parse::<u64>()
            .map(|s| s.saturating_mul(1_000_000))
            .map_err(|_| wrong());
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(wrong)?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| wrong())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(wrong()),
    };
    Ok(now_us.saturating_sub(n.saturating_mul(unit_secs).saturating_mul(1_000_000)))
}

/// µs since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (the civil-from-days algorithm).
pub fn rfc3339(usec: u64) -> String {
    let secs = usec / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        usec % 1_000_000 / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_epochs_parse() {
        let now = 10_000_000_000;
        assert_eq!(parse_since("30s", now), Ok(now - 30_000_000));
        assert_eq!(parse_since("2h", now), Ok(now - 7_200_000_000));
        assert_eq!(parse_since("@5", now), Ok(5_000_000));
        assert!(parse_since("soon", now).unwrap_err().contains("30s, 10m"));
        assert!(parse_since("5y", now).is_err());
    }

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_212_800_123_000), "2026-12-02T12:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn terminals_see_no_control_characters() {
        assert_eq!(
            escape_controls("a\x1b]0;pwned\x07b\tc"),
            "a\\x1b]0;pwned\\x07b\tc"
        );
        let r = (
            1,
            0,
            "sandboxd".to_string(),
            "exited with status 1".to_string(),
        );
        assert_eq!(line(&r, false, true), "-- sandboxd: exited with status 1");
    }
}
