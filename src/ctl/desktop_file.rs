//! Reading an installed application's desktop entry (`--from APP.desktop`): its name,
//! icon, MIME types and categories, and its Exec line split into arguments and field
//! codes, as the Desktop Entry Specification 1.4 defines them.

use std::collections::BTreeMap;

/// One argument of an Exec line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Literal(String),
    /// `%f`, `%F`, `%u` or `%U`: the files or URLs the launcher is given.
    Field(char),
}

/// What a launcher for the app keeps of its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// `Name` and its translations (`Name[de]`), as written.
    pub names: Vec<(String, String)>,
    pub icon: Option<String>,
    pub mime_types: Option<String>,
    pub categories: Option<String>,
    pub exec: Vec<Arg>,
}

/// Reads the `[Desktop Entry]` group of `text`.
pub fn parse(text: &str) -> Result<App, String> {
    let mut group = BTreeMap::new();
    let mut names = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            inside = line == "[Desktop Entry]";
            continue;
        }
        if !inside {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("not a key=value line: {line:?}"));
        };
        let (key, value) = (key.trim(), value.trim_start());
        if key == "Name" || (key.starts_with("Name[") && key.ends_with(']')) {
            names.push((key.to_string(), value.to_string()));
        }
        group.insert(key.to_string(), value.to_string());
    }
    if group.get("Type").map(String::as_str) != Some("Application") {
        return Err("not an application's entry (Type=Application)".into());
    }
    if !names.iter().any(|(k, _)| k == "Name") {
        return Err("the entry has no Name".into());
    }
    let exec = group.get("Exec").ok_or("the entry has no Exec line")?;
    Ok(App {
        names,
        icon: group.get("Icon").cloned(),
        mime_types: group.get("MimeType").cloned(),
        categories: group.get("Categories").cloned(),
        exec: split_exec(&unescape(exec))?,
    })
}

/// Undoes a string value's escapes (`\s`, `\n`, `\t`, `\r`, `\\`).
fn unescape(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Splits an Exec value into arguments: `"…"` quoting with `\"`, `` \` ``, `\$`, `\\`
/// inside, `%%` a percent sign, the file and URL field codes kept, the others
/// (`%i`, `%c`, `%k`, deprecated ones) dropped.
fn split_exec(exec: &str) -> Result<Vec<Arg>, String> {
    let mut args = Vec::new();
    let mut chars = exec.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ').is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match c {
                ' ' if !quoted => break,
                '"' => quoted = !quoted,
                '\\' if quoted => match chars.next() {
                    Some(e) if "\"`$\\".contains(e) => word.push(e),
                    _ => return Err(format!("bad escape in Exec {exec:?}")),
                },
                '%' => match chars.next() {
                    Some('%') => word.push('%'),
                    Some(f @ ('f' | 'F' | 'u' | 'U')) if word.is_empty() && !quoted => {
                        args.push(Arg::Field(f));
                        word.clear();
                        if chars.next_if(|c| *c != ' ').is_some() {
                            return Err(format!(
                                "a field code must be a whole argument in Exec {exec:?}"
                            ));
                        }
                        break;
                    }
                    Some(_) => {}
                    None => return Err(format!("a lone % ends Exec {exec:?}")),
                },
                c => word.push(c),
            }
        }
        if quoted {
            return Err(format!("an unclosed quote in Exec {exec:?}"));
        }
        if !word.is_empty() {
            args.push(Arg::Literal(word));
        }
    }
    if !args.iter().any(|a| matches!(a, Arg::Literal(_))) {
        return Err("the Exec line names no program".into());
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Arg {
        Arg::Literal(s.into())
    }

    #[test]
    fn exec_lines_split_as_the_spec_says() {
        assert_eq!(
            split_exec("firefox --new-window %u").unwrap(),
            [lit("firefox"), lit("--new-window"), Arg::Field('u')]
        );
        assert_eq!(
            split_exec(r#"sh -c "echo \"a b\" \$HOME 100%%" %F"#).unwrap(),
            [
                lit("sh"),
                lit("-c"),
                lit("echo \"a b\" $HOME 100%"),
                Arg::Field('F')
            ]
        );
        assert_eq!(
            split_exec("gedit %i %c %U").unwrap(),
            [lit("gedit"), Arg::Field('U')]
        );
        for bad in ["\"open", "app %", "app %ux", "%u"] {
            assert!(split_exec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_entry_group_only() {
        let app = parse(
            "# c\n[Desktop Entry]\nType=Application\nName=Web\nName[de]=Netz\nIcon=web\nMimeType=text/html;x-scheme-handler/https;\nExec=web\\s%u\n\n[Desktop Action New]\nName=New\nExec=web --new\n",
        )
        .unwrap();
        assert_eq!(
            app.names,
            [
                ("Name".to_string(), "Web".to_string()),
                ("Name[de]".to_string(), "Netz".to_string())
            ]
        );
        assert_eq!(app.icon.as_deref(), Some("web"));
        assert_eq!(
            app.mime_types.as_deref(),
            Some("text/html;x-scheme-handler/https;")
        );
        assert_eq!(app.exec, [lit("web"), Arg::Field('u')]);
        assert!(parse("[Desktop Entry]\nType=Link\nName=x\nURL=y\n").is_err());
        assert!(parse("[Desktop Entry]\nType=Application\nName=x\n").is_err());
    }
}
