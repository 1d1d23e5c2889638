//! Object paths of sandboxes: `/org/sandboxd/Sandboxd1/sandbox/<label>`, where the label is
//! the name escaped as systemd's bus_label_escape does (each byte other than [A-Za-z0-9]
//! becomes `_` and two lowercase hex digits), so every name maps to one valid path.

use zbus::zvariant::OwnedObjectPath;

pub const BUS_NAME: &str = "org.sandboxd.Sandboxd1";
pub const MANAGER_PATH: &str = "/org/sandboxd/Sandboxd1";
pub const MANAGER_INTERFACE: &str = "org.sandboxd.Sandboxd1.Manager";
pub const SANDBOX_INTERFACE: &str = "org.sandboxd.Sandboxd1.Sandbox";

pub fn escape_label(name: &str) -> String {
    if name.is_empty() {
        return "_".into();
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

pub fn sandbox_path(name: &str) -> OwnedObjectPath {
    let path = format!("{MANAGER_PATH}/sandbox/{}", escape_label(name));
    // The label alphabet is [A-Za-z0-9_], always valid in an object path element.
    OwnedObjectPath::try_from(path).expect("escaped labels are valid object path elements")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_systemd() {
        assert_eq!(escape_label("dev"), "dev");
        assert_eq!(escape_label("my-box.2"), "my_2dbox_2e2");
        assert_eq!(escape_label("a_b"), "a_5fb");
        assert_eq!(escape_label(""), "_");
        assert_eq!(
            sandbox_path("x-y").as_str(),
            "/org/sandboxd/Sandboxd1/sandbox/x_2dy"
        );
    }
}
