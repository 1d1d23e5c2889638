//! `sandboxctl desktop-entry NAME CMD…` or `--from APP.desktop`: an XDG desktop entry (Desktop Entry
//! Specification 1.4, the newest desktop-file-validate knows) whose launcher starts the
//! sandbox if needed and runs CMD inside, so a program from a sandbox appears in the host's
//! application menu.

use std::path::{Path, PathBuf};

use super::desktop_file::{self, Arg};
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

/// What a launcher says and runs.
pub struct Launcher {
    pub sandbox: String,
    /// The program and its arguments inside the sandbox, field codes passed through.
    pub command: Vec<Arg>,
    /// `Name` and its translations, as keys and values.
    pub names: Vec<(String, String)>,
    pub icon: Option<String>,
    pub mime_types: Option<String>,
    pub categories: Option<String>,
}

impl Launcher {
    /// A launcher for `command`, titled `title` or "PROGRAM (SANDBOX)".
    pub fn for_command(sandbox: &str, command: &[String], title: Option<&str>) -> Self {
        let title = title
            .map(str::to_string)
            .unwrap_or_else(|| format!("{} ({sandbox})", program_name(command)));
        Self {
            sandbox: sandbox.into(),
            command: command.iter().cloned().map(Arg::Literal).collect(),
            names: vec![("Name".into(), title)],
            icon: None,
            mime_types: None,
            categories: None,
        }
    }

    /// A launcher for the installed app `entry` describes: its names (with the sandbox's
    /// added), icon, MIME types, categories and command.
    pub fn for_app(sandbox: &str, app: desktop_file::App, title: Option<&str>) -> Self {
        let names = match title {
            Some(t) => vec![("Name".into(), t.to_string())],
            None => app
                .names
                .into_iter()
                .map(|(k, v)| (k, format!("{v} ({sandbox})")))
                .collect(),
        };
        Self {
            sandbox: sandbox.into(),
            command: app.exec,
            names,
            icon: app.icon,
            mime_types: app.mime_types,
            categories: app.categories,
        }
    }

    /// The command's words, field codes left out.
    fn words(&self) -> Vec<String> {
        self.command
            .iter()
            .filter_map(|a| match a {
                Arg::Literal(w) => Some(w.clone()),
                Arg::Field(_) => None,
            })
            .collect()
    }

    fn program(&self) -> String {
        program_name(&self.words())
    }
}

/// The base name of the command's program.
fn program_name(command: &[String]) -> String {
    command
        .first()
        .and_then(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The entry's text.
pub fn render(l: &Launcher, sandboxctl: &Path) -> String {
    let mut exec: Vec<String> = [
        sandboxctl.display().to_string(),
        "exec".into(),
        "--start".into(),
        l.sandbox.clone(),
        "--".into(),
    ]
    .iter()
    .map(|a| quote_arg(a))
    .collect();
    exec.extend(l.command.iter().map(|a| match a {
        Arg::Literal(w) => quote_arg(w),
        Arg::Field(f) => format!("%{f}"),
    }));
    let literal = l.words();
    let mut text = String::from("[Desktop Entry]\nType=Application\nVersion=1.4\n");
    for (key, name) in &l.names {
        text.push_str(&format!("{key}={}\n", escape_value(name)));
    }
    text.push_str(&format!(
        "Comment={}\nExec={}\nTerminal=false\nCategories={}\nX-Sandboxd-Sandbox={}\n",
        escape_value(&format!(
            "{} in the sandbox {}",
            literal.join(" "),
            l.sandbox
        )),
        escape_value(&exec.join(" ")),
        escape_value(l.categories.as_deref().unwrap_or("Utility;")),
        escape_value(&l.sandbox),
    ));
    if let Some(icon) = &l.icon {
        text.push_str(&format!("Icon={}\n", escape_value(icon)));
    }
    if let Some(mime) = &l.mime_types {
        text.push_str(&format!("MimeType={}\n", escape_value(mime)));
    }
    text
}

pub fn applications_dir() -> PathBuf {
    crate::paths::data_home().join("applications")
}

/// Writes `sandboxd-SANDBOX-ID.desktop` into the applications folder (ID: the installed
/// entry's file name, else the program's); returns its path.
pub fn write(l: &Launcher, id: Option<&str>) -> Result<PathBuf, String> {
    validate_name(&l.sandbox).map_err(|e| e.to_string())?;
    let base = id.map_or_else(|| l.program(), str::to_string);
    let slug: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let sandboxctl =
        std::env::current_exe().map_err(|e| format!("cannot find sandboxctl itself: {e}"))?;
    let dir = applications_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = dir.join(format!("sandboxd-{}-{slug}.desktop", l.sandbox));
    std::fs::write(&file, render(l, &sandboxctl))
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
        let l = Launcher::for_command(
            "dev",
            &["sh".into(), "-c".into(), "echo a\\b".into()],
            Some("T"),
        );
        let text = render(&l, Path::new("/bin/sandboxctl"));
        // The argument's backslash is escaped for the quoted argument, then once more for
        // the string value: four in the file.
        assert!(
            text.contains("Exec=/bin/sandboxctl exec --start dev -- sh -c \"echo a\\\\\\\\b\"\n"),
            "{text}"
        );
    }

    #[test]
    fn an_app_keeps_its_names_icon_types_and_field_codes() {
        let app = desktop_file::parse(
            "[Desktop Entry]\nType=Application\nName=Web\nName[de]=Netz\nIcon=web\nMimeType=text/html;\nCategories=Network;\nExec=web --new %u\n",
        )
        .unwrap();
        let text = render(&Launcher::for_app("b", app, None), Path::new("/s"));
        for line in [
            "Name=Web (b)\n",
            "Name[de]=Netz (b)\n",
            "Exec=/s exec --start b -- web --new %u\n",
            "Icon=web\n",
            "MimeType=text/html;\n",
            "Categories=Network;\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
