//! Parsing a profile file into a [`Profile`], with errors a person can act on: the file,
//! the line and column, the key, and what is wrong.

use std::ops::Range;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::model::RawProfile;
use super::validate::{validate, Invalid};
use super::{InvalidName, Profile};

#[derive(Debug, Error)]
pub enum ProfileError {
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("no profile named {name:?} (looked in {searched})")]
    NotFound { name: String, searched: String },
    #[error("cannot read profile {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {key}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

impl ProfileError {
    /// True for errors about the profile's content (as opposed to it being absent).
    pub fn is_invalid(&self) -> bool {
        !matches!(self, Self::NotFound { .. })
    }
}

/// A TOML document that failed to deserialize or validate: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

/// Deserializes `src`, locating any error at its line, column and dotted key.
pub fn deserialize_located<T: serde::de::DeserializeOwned>(src: &str) -> Result<T, Located> {
    serde_path_to_error::deserialize(toml::Deserializer::new(src)).map_err(|e| {
        let key = match e.path().to_string() {
            p if p == "." => "(document)".to_string(),
            // A table or key named `''`: say so rather than name nothing.
            p if p.is_empty() => "'' (an empty key)".to_string(),
            p => p,
        };
        let span = e.inner().span().or_else(|| locate(src, &key));
        located(
            src,
            span,
            key,
            match e.inner().message() {
                // Some syntax errors come without a message of their own.
                "" => "invalid TOML syntax here".to_string(),
                m => with_suggestion(m),
            },
        )
    })
}

/// serde's "unknown field `proces`, expected one of `a`, `b`…" with the nearest known
/// key suggested, when one is near (a typo, not another word).
fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let nearest = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (edit_distance(unknown, k), k))
        .min();
    match nearest {
        Some((d, k)) if d > 0 && d <= (unknown.len() / 3).max(1) => {
            format!("{message}; did you mean `{k}`?")
        }
        _ => message.to_string(),
    }
}

/// Edit distance with a swap of neighbours counted as one edit (optimal string
/// alignment): typos like `mdoe` are one edit from `mode`. Keys are short.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Locates a semantic error about `key` found after parsing.
pub fn locate_key(src: &str, key: String, message: String) -> Located {
    let span = locate(src, &key);
    located(src, span, key, message)
}

fn located(src: &str, span: Option<Range<usize>>, key: String, message: String) -> Located {
    let (line, column) = span.map_or((1, 1), |s| line_column(src, s.start));
    Located {
        line,
        column,
        key,
        message,
    }
}

/// Parses and validates profile `name` from `src`, read from `file`.
pub fn parse_profile(
    name: &str,
    file: &Path,
    src: &str,
    home: &Path,
) -> Result<Profile, ProfileError> {
    let at = |Located {
                  line,
                  column,
                  key,
                  message,
              }| ProfileError::Invalid {
        file: file.to_path_buf(),
        line,
        column,
        key,
        message,
    };
    let raw: RawProfile = deserialize_located(src).map_err(at)?;
    validate(name, file, raw, home)
        .map_err(|Invalid { key, message }| at(locate_key(src, key, message)))
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Finds where the value of a dotted key path such as `mount[1].source` is written; falls
/// back to the nearest enclosing key that exists.
fn locate(src: &str, path: &str) -> Option<Range<usize>> {
    let doc = toml_edit::ImDocument::parse(src).ok()?;
    let mut item: &toml_edit::Item = doc.as_item();
    let mut found = None;
    for seg in path.split('.') {
        let (key, index) = match seg.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        let Some(next) = item.get(key) else { break };
        item = next;
        found = item.span().or(found);
        if let Some(i) = index {
            let child = match item {
                toml_edit::Item::ArrayOfTables(a) => a.get(i).map(|t| t.span()),
                toml_edit::Item::Value(toml_edit::Value::Array(a)) => a.get(i).map(|v| v.span()),
                _ => None,
            };
            match (child, item.get(i)) {
                (Some(span), Some(next)) => {
                    found = span.or(found);
                    item = next;
                }
                (Some(span), None) => return span.or(found),
                _ => break,
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Profile, ProfileError> {
        parse_profile("t", Path::new("/p/t.toml"), src, Path::new("/"))
    }

    fn err(src: &str) -> (usize, usize, String, String) {
        match parse(src) {
            Err(ProfileError::Invalid {
                line,
                column,
                key,
                message,
                ..
            }) => (line, column, key, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn minimal_profile() {
        let p = parse("[rootfs]\nhost = true\n").unwrap();
        assert_eq!(p.hostname, "t");
        assert_eq!(p.restart.stop_timeout.as_secs(), 10);
        assert_eq!(p.network.mode, super::super::NetworkMode::Proxy);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let (line, col, key, msg) = err("[rootfs]\nhost = true\n[network]\nmdoe = \"none\"\n");
        assert_eq!((line, col), (4, 1));
        assert_eq!(key, "network.mdoe");
        assert!(msg.contains("unknown field `mdoe`"), "{msg}");
        assert!(msg.ends_with("did you mean `mode`?"), "{msg}");
    }

    #[test]
    fn unknown_keys_get_the_nearest_known_one() {
        let (_, _, _, msg) = err("[proces]\ncommand = [\"x\"]\n");
        assert!(msg.ends_with("did you mean `process`?"), "{msg}");
        // Another word entirely gets no guess.
        let (_, _, _, msg) = err("[rootfs]\nhost = true\n[elephant]\n");
        assert!(!msg.contains("did you mean"), "{msg}");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("mdoe", "mode"), 1);
    }

    #[test]
    fn wrong_type() {
        let (line, _, key, msg) = err("[rootfs]\nhost = \"yes\"\n");
        assert_eq!((line, key.as_str()), (2, "rootfs.host"));
        assert!(msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn bad_duration() {
        let (line, col, key, msg) =
            err("[rootfs]\nhost = true\n\n[restart]\nstop_timeout = \"soon\"\n");
        assert_eq!((line, col, key.as_str()), (5, 16, "restart.stop_timeout"));
        assert!(msg.contains("invalid duration"), "{msg}");
    }

    #[test]
    fn missing_rootfs_path() {
        let (line, col, key, msg) =
            err("description = \"x\"\n[rootfs]\npath = \"/nonexistent/rootfs\"\n");
        assert_eq!((line, col, key.as_str()), (3, 8, "rootfs.path"));
        assert!(msg.contains("No such file"), "{msg}");
    }

    #[test]
    fn relative_mount_source_points_into_the_array() {
        let src = "[rootfs]\nhost = true\n[[mount]]\nsource = \"/\"\ndestination = \"/a\"\n[[mount]]\nsource = \"rel\"\ndestination = \"/b\"\n";
        let (line, _, key, msg) = err(src);
        assert_eq!((line, key.as_str()), (7, "mount[1].source"));
        assert!(msg.contains("not an absolute path"), "{msg}");
    }

    #[test]
    fn an_empty_key_is_named_as_one() {
        let (line, _, key, msg) = err("[['']]\nx = 1\n[rootfs]\nhost = true\n");
        assert_eq!((line, key.as_str()), (1, "'' (an empty key)"));
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn mount_destination_cannot_climb() {
        let src =
            "[rootfs]\nhost = true\n[[mount]]\nsource = \"/\"\ndestination = \"/a/../../etc\"\n";
        assert_eq!(err(src).2, "mount[0].destination");
    }

    #[test]
    fn home_is_a_kind_or_an_existing_folder() {
        let p = parse("home = \"tmpfs\"\n[rootfs]\nhost = true\n").unwrap();
        assert_eq!(p.home, Some(super::super::Home::Tmpfs));
        let p = parse("home = \"/tmp\"\n[rootfs]\nhost = true\n").unwrap();
        assert_eq!(p.home, Some(super::super::Home::Path("/tmp".into())));
        let (line, _, key, msg) = err("home = \"tmp\"\n[rootfs]\nhost = true\n");
        assert_eq!((line, key.as_str()), (1, "home"));
        assert!(msg.contains("\"persistent\""), "{msg}");
        let (_, _, key, msg) = err("home = \"/nonexistent/h\"\n[rootfs]\nhost = true\n");
        assert_eq!(key, "home");
        assert!(msg.contains("No such file"), "{msg}");
    }

    #[test]
    fn duplicate_and_syntax_errors_have_positions() {
        let (line, _, key, _) = err("[rootfs]\nhost = true\nhost = false\n");
        assert_eq!(line, 3);
        assert!(key.contains("rootfs") || key == "(document)", "{key}");
        let (line, _, _, _) = err("[rootfs\n");
        assert_eq!(line, 1);
    }

    #[test]
    fn syntax_error_without_a_parser_message_still_says_something() {
        // Found by tests/fuzz_profile.rs: the parser gives an empty message here.
        let (line, _, key, msg) = err("[rootfs]\nhost = true\nst-=");
        assert_eq!((line, key.as_str()), (3, "(document)"));
        assert_eq!(msg, "invalid TOML syntax here");
    }

    #[test]
    fn error_display_is_file_line_column_key() {
        let e = parse("[rootfs]\nhost = 1\n").unwrap_err().to_string();
        assert!(e.starts_with("/p/t.toml:2:8: rootfs.host: "), "{e}");
    }

    #[test]
    fn every_section_parses() {
        let src = r#"
description = "all keys"
hostname = "dev"
autostart = true
home = "persistent"
[rootfs]
host = true
readonly = true
[process]
command = ["sh", "-c", "true"]
user = 1000
cwd = "/home/user"
env = { EDITOR = "nvim" }
[[mount]]
source = "/"
destination = "/host"
readonly = true
[network]
mode = "none"
allow = ["0.0.0.0/0", "::/0", "github.com:443"]
deny = ["10.0.0.0/8"]
allow_host = [5432]
allow_lan = false
dns = true
upstream = "socks5://127.0.0.1:9050"
[gui]
wayland = false
x11 = false
[audio]
pulseaudio = false
pipewire = false
[devices]
gpu = false
sound = false
extra = ["/dev/fuse"]
[limits]
memory = "8G"
pids = 4096
nofile = 4096
[restart]
policy = "on-failure"
max = 2
stop_timeout = "3s"
"#;
        let p = parse(src).unwrap();
        assert_eq!(p.limits.memory, Some(8 << 30));
        assert_eq!(p.restart.max, 2);
        assert_eq!(p.process.user, Some(super::super::User::Id(1000)));
        assert_eq!(
            p.network.allow_host,
            super::super::AllowHost::Ports(vec![5432])
        );
        assert!(p.unsupported_features().is_empty());
    }
}
