//! The `[dbus]` table: which peers of the session (and system) bus a sandbox may see, talk
//! to and own, in xdg-dbus-proxy's vocabulary. Every entry is checked against the D-Bus
//! grammar here, so the proxy never receives a rule it would read differently.

use serde::Deserialize;

use super::validate::{invalid, Invalid};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDbus {
    #[serde(default)]
    pub see: Vec<String>,
    #[serde(default)]
    pub talk: Vec<String>,
    #[serde(default)]
    pub own: Vec<String>,
    #[serde(default)]
    pub call: Vec<String>,
    #[serde(default)]
    pub broadcast: Vec<String>,
    #[serde(default)]
    pub portals: bool,
    #[serde(default)]
    pub system_talk: Vec<String>,
    pub app_id: Option<String>,
}

/// A checked `[dbus]` table. Its presence gives the sandbox a filtered session bus.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dbus {
    /// Names listed and resolvable, not callable.
    pub see: Vec<String>,
    /// Names the sandbox may call and get signals from.
    pub talk: Vec<String>,
    /// Names the sandbox may own (and talk to).
    pub own: Vec<String>,
    /// `NAME=RULE`: calls allowed on a name beyond its policy.
    pub call: Vec<String>,
    /// `NAME=RULE`: broadcast signals received from a name.
    pub broadcast: Vec<String>,
    /// The desktop portals (`org.freedesktop.portal.*`), which check access themselves.
    pub portals: bool,
    /// Names of the system bus the sandbox may talk to; empty: no system bus.
    pub system_talk: Vec<String>,
    /// What the portals know the sandbox as; `None`: `sandboxd.NAME`.
    pub app_id: Option<String>,
}

impl Dbus {
    /// The app id of sandbox `name`: `app_id`, else `sandboxd.NAME` (dots in NAME made
    /// `_`, so it stays one element and may hold `-`).
    pub fn app_id_of(&self, name: &str) -> String {
        self.app_id
            .clone()
            .unwrap_or_else(|| format!("sandboxd.{}", name.replace('.', "_")))
    }
}

/// An application id as the portals accept one: two or more elements of
/// `[A-Za-z0-9_]`, `-` allowed in the last, at most 255 bytes.
fn is_app_id(id: &str) -> bool {
    let elements: Vec<&str> = id.split('.').collect();
    let last = elements.len() - 1;
    id.len() <= MAX_NAME
        && elements.len() >= 2
        && elements.iter().enumerate().all(|(i, e)| {
            !e.is_empty()
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || (b == b'-' && i == last))
        })
}

/// The most a D-Bus name may have (the specification's limit).
const MAX_NAME: usize = 255;

/// A well-known bus name, e.g. `org.freedesktop.Notifications`: two or more elements of
/// `[A-Za-z0-9_-]`, none empty or starting with a digit.
fn is_bus_name(name: &str, min_elements: usize) -> bool {
    let elements: Vec<&str> = name.split('.').collect();
    name.len() <= MAX_NAME
        && elements.len() >= min_elements
        && elements.iter().all(|e| {
            !e.is_empty()
                && !e.as_bytes()[0].is_ascii_digit()
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// An interface or member path (`org.example.Iface`, `org.example.Iface.Method`): like a
/// bus name without `-`.
fn is_interface(name: &str) -> bool {
    is_bus_name(name, 2) && !name.contains('-')
}

/// `org.example.App` or `org.example.*` (which xdg-dbus-proxy reads as the name and
/// everything below it).
fn name_pattern(key: &str, raw: &str) -> Result<(), Invalid> {
    let ok = match raw.strip_suffix(".*") {
        Some(prefix) => is_bus_name(prefix, 1),
        None => is_bus_name(raw, 2),
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{raw:?} is not a D-Bus name (like \"org.example.App\" or \"org.example.*\"; unique names like \":1.5\" change and cannot be listed)"),
        ))
    }
}

/// An object path, `/` or `/a/b_c`, optionally ending in `/*` (the subtree).
fn is_object_path(raw: &str) -> bool {
    let path = raw.strip_suffix("/*").unwrap_or(raw);
    if path == "/" || (path.is_empty() && raw == "/*") {
        return true;
    }
    path.strip_prefix('/').is_some_and(|rest| {
        rest.split('/')
            .all(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    })
}

/// `NAME=RULE`, RULE being `[METHOD][@PATH]` with METHOD `*`, an interface (`.*` allowed)
/// or a method, as `--call`/`--broadcast` take it.
fn name_rule(key: &str, raw: &str) -> Result<(), Invalid> {
    let shape = "NAME=[INTERFACE[.METHOD] or *][@/OBJECT/PATH[/*]], e.g. \"org.example.App=org.example.App.Open@/org/example/*\"";
    let Some((name, rule)) = raw.split_once('=') else {
        return Err(invalid(key, format!("{raw:?} is not {shape}")));
    };
    name_pattern(key, name)?;
    let (method, path) = match rule.split_once('@') {
        Some((m, p)) => (m, Some(p)),
        None => (rule, None),
    };
    let method_ok = match method {
        "" => path.is_some(),
        "*" => true,
        m => is_interface(m.strip_suffix(".*").unwrap_or(m)),
    };
    if !method_ok || path.is_some_and(|p| !is_object_path(p)) {
        return Err(invalid(key, format!("{raw:?} is not {shape}")));
    }
    Ok(())
}

/// Checks every entry of `[dbus]`, naming the first bad one as `dbus.KEY[i]`.
pub fn validate(raw: RawDbus) -> Result<Dbus, Invalid> {
    let names = [
        ("see", &raw.see),
        ("talk", &raw.talk),
        ("own", &raw.own),
        ("system_talk", &raw.system_talk),
    ];
    for (key, list) in names {
        for (i, n) in list.iter().enumerate() {
            name_pattern(&format!("dbus.{key}[{i}]"), n)?;
        }
    }
    for (key, list) in [("call", &raw.call), ("broadcast", &raw.broadcast)] {
        for (i, r) in list.iter().enumerate() {
            name_rule(&format!("dbus.{key}[{i}]"), r)?;
        }
    }
    if let Some(id) = raw.app_id.as_deref().filter(|id| !is_app_id(id)) {
        return Err(invalid(
            "dbus.app_id",
            format!("{id:?} is not an application id (like \"org.example.App\": two or more elements of letters, digits and '_', '-' only in the last)"),
        ));
    }
    Ok(Dbus {
        see: raw.see,
        talk: raw.talk,
        own: raw.own,
        call: raw.call,
        broadcast: raw.broadcast,
        portals: raw.portals,
        system_talk: raw.system_talk,
        app_id: raw.app_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_dbus_grammar() {
        for ok in [
            "org.freedesktop.Notifications",
            "org.mozilla.firefox.*",
            "org.*",
            "com.example.my-app",
            "org._7zip.App",
        ] {
            assert!(name_pattern("k", ok).is_ok(), "{ok}");
        }
        for bad in [
            "not a name",
            "org",
            ":1.5",
            "org..x",
            "org.7zip",
            ".org.x",
            "org.x.",
            "*",
            "org.x*",
            "",
            &format!("org.{}", "a".repeat(252)),
        ] {
            let e = name_pattern("dbus.talk[0]", bad).unwrap_err();
            assert_eq!(e.key, "dbus.talk[0]");
        }
    }

    #[test]
    fn rules_are_name_method_and_path() {
        for ok in [
            "org.freedesktop.portal.*=*",
            "org.freedesktop.portal.*=@/org/freedesktop/portal/*",
            "org.example.App=org.example.App.Open@/org/example/App",
            "org.example.App=org.example.*",
            "org.example.App=@/",
            "org.example.App=*@/*",
        ] {
            assert!(name_rule("k", ok).is_ok(), "{ok}");
        }
        for bad in [
            "x",
            "org.example.App",
            "org.example.App=",
            "org.example.App=@",
            "org.example.App=*@relative",
            "org.example.App=*@/a//b",
            "org.example.App=org.example-x.Open",
            "bad name=*",
            "org.example.App=Open",
        ] {
            assert!(name_rule("k", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn app_ids_default_to_the_sandbox_s_name() {
        let d = Dbus::default();
        assert_eq!(d.app_id_of("web"), "sandboxd.web");
        assert_eq!(d.app_id_of("my.app-2"), "sandboxd.my_app-2");
        for name in ["web", "my.app-2", "a-b.c.d", "0x"] {
            assert!(is_app_id(&d.app_id_of(name)), "{name}");
        }
        for bad in ["app", "org.my-x.App", "org..App", "org.App!", ""] {
            assert!(!is_app_id(bad), "{bad}");
        }
        let raw = RawDbus {
            app_id: Some("nope".into()),
            ..RawDbus::default()
        };
        assert_eq!(validate(raw).unwrap_err().key, "dbus.app_id");
        let raw = RawDbus {
            app_id: Some("org.example.Web-2".into()),
            ..RawDbus::default()
        };
        assert_eq!(validate(raw).unwrap().app_id_of("x"), "org.example.Web-2");
    }

    #[test]
    fn the_first_bad_entry_is_named() {
        let raw = RawDbus {
            talk: vec!["org.freedesktop.Notifications".into(), "not a name".into()],
            ..RawDbus::default()
        };
        assert_eq!(validate(raw).unwrap_err().key, "dbus.talk[1]");
        let raw = RawDbus {
            call: vec!["x".into()],
            ..RawDbus::default()
        };
        let e = validate(raw).unwrap_err();
        assert_eq!(e.key, "dbus.call[0]");
        assert!(e.message.contains("NAME="), "{}", e.message);
    }
}
