//! Profile and sandbox names: the one grammar every name used in a path, a runc id or a
//! D-Bus object path must satisfy.

use thiserror::Error;

/// Longest name accepted: 1 leading character plus 63 more (DESIGN §4).
pub const MAX_NAME_LEN: usize = 64;

/// A name that is not `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid name {shown:?}: a name is 1 to 64 characters of letters, digits, '_', '.' and '-', starting with a letter or digit")]
pub struct InvalidName {
    /// The offending name, cut short so that hostile input cannot flood a log line.
    pub shown: String,
}

/// Checks `name` against the profile name grammar.
///
/// Rejecting `/`, a leading `.` and NUL here is what keeps `..` and friends out of every
/// path the daemon builds from a name (bundles, runc ids, profile files).
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    let bytes = name.as_bytes();
    let first_ok = bytes.first().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if first_ok && rest_ok && bytes.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(InvalidName {
            shown: name.chars().take(80).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_grammar() {
        for ok in ["a", "default", "dev-box_2.arch", "0", &"x".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_paths_and_garbage() {
        let long = "y".repeat(65);
        let huge = "z".repeat(10_000);
        for bad in [
            "", ".", "..", "../etc", "a/b", "/abs", "-x", "_x", ".hidden", "a\0b", "a b", "é",
            &long, &huge,
        ] {
            let err = validate_name(bad).unwrap_err();
            assert!(err.shown.chars().count() <= 80);
        }
    }
}
