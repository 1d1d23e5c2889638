//! `sandboxctl desktop-entry NAME CMD…`: an XDG desktop entry (Desktop Entry
//! Specification 1.4, the newest desktop-file-validate knows) whose launcher starts the
//! sandbox if needed and runs CMD inside, so a program from a sandbox appears in the host's
//! application menu.

use std::path::{Path, PathBuf};

use crate::profile::validate_name;

/// Quotes one Exec argument: reserved characters force double quotes, inside which `"`,
/// `` ` ``, `$` and `\` are escaped; `%` is doubled (field codes) everywhere.
fn quote_arg(arg: &str) -> String {
    let arg = arg.replace('%', "%%");
    let reserved = |c: char| c.is_whitespace() || "\"'\\><~|&;$*?#()`".contains(c);
    if !arg.is_empty() && !arg.chars().any(reserved) {
        return arg;
    }
    let mut out = String::from("\"");
    for c in arg.chars() {
        if matches!(c, '"' | '`' | '$' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Escapes a string value (`\s`, `\n`, `\t`, `\r`, `\\`); the Exec key then needs its
/// backslashes doubled once more, which this does for every value.
fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\t', "\\t")
        .replace('\r', "\\r")
}

/// The entry's text.
pub fn render(
    sandbox: &str,
    command: &[String],
    sandboxctl: &Path,
    title: &str,
    icon: Option<&str>,
) -> String {
    let mut exec = vec![
        sandboxctl.display().to_string(),
        "exec".into(),
        "--start".into(),
        sandbox.into(),
        "--".into(),
    ];
    exec.extend(command.iter().cloned());
    let exec: Vec<String> = exec.iter().map(|a| quote_arg(a)).collect();
    let mut text = format!(
        "[Desktop Entry]\nType=Application\nVersion=1.4\nName={}\nComment={}\nExec={}\nTerminal=false\nCategories=Utility;\nX-Sandboxd-Sandbox={}\n",
        escape_value(title),
        escape_value(&format!("{} in the sandbox {sandbox}", command.join(" "))),
        escape_value(&exec.join(" ")),
        escape_value(sandbox),
    );
    if let Some(icon) = icon {
        text.push_str(&format!("Icon={}\n", escape_value(icon)));
    }
    text
}

pub fn applications_dir() -> PathBuf {
    crate::paths::data_home().join("applications")
}

/// Writes `sandboxd-SANDBOX-PROGRAM.desktop` into the applications folder; returns its path.
pub fn write(
    sandbox: &str,
    command: &[String],
    title: Option<&str>,
    icon: Option<&str>,
) -> Result<PathBuf, String> {
    validate_name(sandbox).map_err(|e| e.to_string())?;
    let program = command.first().ok_or("no command given")?;
    let base = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let slug: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let sandboxctl =
        std::env::current_exe().map_err(|e| format!("cannot find sandboxctl itself: {e}"))?;
    let title = title
        .map(str::to_string)
        .unwrap_or_else(|| format!("{base} ({sandbox})"));
    let dir = applications_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = dir.join(format!("sandboxd-{sandbox}-{slug}.desktop"));
    std::fs::write(&file, render(sandbox, command, &sandboxctl, &title, icon))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_follows_the_spec() {
        assert_eq!(quote_arg("firefox"), "firefox");
        assert_eq!(quote_arg("a b"), "\"a b\"");
        assert_eq!(quote_arg("say \"hi\" $HOME"), "\"say \\\"hi\\\" \\$HOME\"");
        assert_eq!(quote_arg("100%"), "100%%");
        assert_eq!(quote_arg(""), "\"\"");
    }

    #[test]
    fn exec_line_doubles_backslashes() {
        let text = render(
            "dev",
            &["sh".into(), "-c".into(), "echo a\\b".into()],
            Path::new("/bin/sandboxctl"),
            "T",
            None,
        );
        // The argument's backslash is escaped for the quoted argument, then once more for
        // the string value: four in the file.
        assert!(
            text.contains("Exec=/bin/sandboxctl exec --start dev -- sh -c \"echo a\\\\\\\\b\"\n"),
            "{text}"
        );
    }
}
