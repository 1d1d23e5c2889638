//! The X cookie a sandbox gets: the session's Xauthority entries for its display, made
//! valid under any host name. An entry of the usual `FamilyLocal` kind is keyed by the
//! machine's host name, which a sandbox does not share (it has its own), so X clients
//! inside would find no cookie; Flatpak rewrites them the same way.

use std::path::{Path, PathBuf};

use super::desktop::{display_number, SessionEnv};

/// `FamilyLocal` in libXau: a unix-socket entry keyed by host name.
const FAMILY_LOCAL: u16 = 256;
/// `FamilyWild`: matches every address.
const FAMILY_WILD: u16 = 0xffff;

/// One Xauthority entry: family, address, display number, auth name, auth data.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    family: u16,
    fields: [Vec<u8>; 4],
}

fn parse(mut bytes: &[u8]) -> Option<Vec<Entry>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head)
    }
    fn u16_of(b: &mut &[u8]) -> Option<u16> {
        take(b, 2).map(|x| u16::from_be_bytes([x[0], x[1]]))
    }
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let family = u16_of(&mut bytes)?;
        let mut field = || {
            let len = u16_of(&mut bytes)? as usize;
            take(&mut bytes, len).map(<[u8]>::to_vec)
        };
        let fields = [field()?, field()?, field()?, field()?];
        entries.push(Entry { family, fields });
    }
    Some(entries)
}

fn write(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend(e.family.to_be_bytes());
        for f in &e.fields {
            out.extend((f.len() as u16).to_be_bytes());
            out.extend(f);
        }
    }
    out
}

/// The entries of `xauthority` (a file's bytes) for local display `number`, as wildcard
/// entries; `None` when the file is malformed or has none.
pub fn for_display(xauthority: &[u8], number: &str) -> Option<Vec<u8>> {
    let kept: Vec<Entry> = parse(xauthority)?
        .into_iter()
        .filter(|e| matches!(e.family, FAMILY_LOCAL | FAMILY_WILD))
        .filter(|e| e.fields[1] == number.as_bytes())
        .map(|e| Entry {
            family: FAMILY_WILD,
            fields: [
                Vec::new(),
                e.fields[1].clone(),
                e.fields[2].clone(),
                e.fields[3].clone(),
            ],
        })
        .collect();
    (!kept.is_empty()).then(|| write(&kept))
}

/// Writes the sandbox's cookie for the session's `DISPLAY` as `dir/Xauthority` (readable
/// by every user inside) from `$XAUTHORITY` or `~/.Xauthority`; returns its path, or
/// `None` when the session has no cookie for the display (the server may need none).
pub fn write_for_sandbox(
    session: &SessionEnv,
    home: &Path,
    dir: &Path,
) -> std::io::Result<Option<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let Some(number) = session.get("DISPLAY").and_then(|d| display_number(d)) else {
        return Ok(None);
    };
    let source = session
        .get("XAUTHORITY")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".Xauthority"));
    let Ok(bytes) = std::fs::read(source) else {
        return Ok(None);
    };
    let Some(cookie) = for_display(&bytes, number) else {
        return Ok(None);
    };
    let path = dir.join("Xauthority");
    std::fs::write(&path, cookie)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(family: u16, host: &str, number: &str, cookie: &[u8]) -> Entry {
        Entry {
            family,
            fields: [
                host.into(),
                number.into(),
                b"MIT-MAGIC-COOKIE-1".to_vec(),
                cookie.to_vec(),
            ],
        }
    }

    #[test]
    fn only_the_display_s_local_entries_are_kept_as_wildcards() {
        let file = write(&[
            entry(FAMILY_LOCAL, "host", "0", b"zero"),
            entry(FAMILY_LOCAL, "host", "42", b"forty-two"),
            // A TCP entry (FamilyInternet) for the same number is not a local display's.
            entry(0, "\x0a\0\0\x01", "42", b"tcp"),
        ]);
        let kept = parse(&for_display(&file, "42").unwrap()).unwrap();
        assert_eq!(kept, [entry(FAMILY_WILD, "", "42", b"forty-two")]);
        assert_eq!(for_display(&file, "7"), None);
    }

    #[test]
    fn malformed_files_give_nothing() {
        let mut file = write(&[entry(FAMILY_LOCAL, "host", "0", b"zero")]);
        file.pop();
        assert_eq!(for_display(&file, "0"), None);
        assert_eq!(for_display(&[], "0"), None);
        assert_eq!(for_display(&[1], "0"), None);
    }
}
