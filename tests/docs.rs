//! The documentation people read: man pages render without warnings and sandboxctl(1)
//! lists every command the CLI has.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use clap::CommandFactory;

const MAN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/man");

#[test]
fn man_pages_render_cleanly() {
    for page in ["sandboxctl.1", "sandboxd.8", "sandboxd.profile.5"] {
        let out = Command::new("groff")
            .args(["-man", "-ww", "-z", "-Tutf8"])
            .arg(format!("{MAN}/{page}"))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn sandboxctl_page_lists_every_command() {
    let page = std::fs::read_to_string(format!("{MAN}/sandboxctl.1"))
        .unwrap()
        .replace("\\-", "-");
    let cli = sandboxd::ctl::Cli::command();
    for sub in cli.get_subcommands() {
        let name = sub.get_name();
        if name == "help" {
            continue;
        }
        assert!(
            page.contains(name),
            "sandboxctl(1) does not mention `{name}`"
        );
        // Hidden ones are internal (`rootfs apply-layers`, run by pull and import).
        for nested in sub
            .get_subcommands()
            .filter(|n| n.get_name() != "help" && !n.is_hide_set())
        {
            let full = format!("{name} {}", nested.get_name());
            assert!(
                page.contains(&full),
                "sandboxctl(1) does not mention `{full}`"
            );
        }
    }
}
