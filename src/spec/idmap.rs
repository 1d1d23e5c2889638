//! Subordinate id ranges from `/etc/subuid` and `/etc/subgid` (subuid(5)), and the
//! container id maps built from them.

use std::path::Path;

/// Container ids 1..=65536 are mapped when the user has that many subordinate ids.
pub const SUBORDINATE_SPAN: u32 = 65536;

/// One mapping line: container ids `inside..inside+size` are host ids `host..host+size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub host: u32,
    pub size: u32,
}

/// The first range in a subuid(5)-format file for `user` (by name or by numeric id).
pub fn subordinate_range(file: &Path, user: &str, id: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.trim().split(':');
        let (owner, start, count) = (parts.next()?, parts.next()?, parts.next()?);
        if owner != user && owner.parse::<u32>().ok() != Some(id) {
            return None;
        }
        let (start, count) = (start.parse().ok()?, count.parse::<u32>().ok()?);
        (count > 0).then_some((start, count))
    })
}

/// `0 → host_id` (size 1), then `1..` onto the subordinate range when there is one.
pub fn container_map(host_id: u32, subordinate: Option<(u32, u32)>) -> Vec<IdRange> {
    let mut map = vec![IdRange {
        inside: 0,
        host: host_id,
        size: 1,
    }];
    if let Some((start, count)) = subordinate {
        map.push(IdRange {
            inside: 1,
            host: start,
            size: count.min(SUBORDINATE_SPAN),
        });
    }
    map
}

/// Maps for runc running inside the daemon's intermediate user namespace, where id 0 is
/// the calling user and ids `1..=span` are the subordinate ids. Container root is you.
pub fn intermediate_root_map(span: u32) -> Vec<IdRange> {
    vec![
        IdRange {
            inside: 0,
            host: 0,
            size: 1,
        },
        IdRange {
            inside: 1,
            host: 1,
            size: span,
        },
    ]
}

/// "keep-id" inside the intermediate namespace: container id `n` is you (intermediate 0),
/// container root and the ids below `n` are subordinate ids, the ids above `n` map onto
/// themselves. `None` when `n` is outside the subordinate span.
pub fn keep_id_map(n: u32, span: u32) -> Option<Vec<IdRange>> {
    if n == 0 || n > span {
        return None;
    }
    let mut map = vec![
        IdRange {
            inside: 0,
            host: 1,
            size: n,
        },
        IdRange {
            inside: n,
            host: 0,
            size: 1,
        },
    ];
    if span > n {
        map.push(IdRange {
            inside: n + 1,
            host: n + 1,
            size: span - n,
        });
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_id_maps_cover_every_id_once() {
        let map = keep_id_map(1000, 65536).unwrap();
        assert_eq!(
            map[0],
            IdRange {
                inside: 0,
                host: 1,
                size: 1000
            }
        );
        assert_eq!(
            map[1],
            IdRange {
                inside: 1000,
                host: 0,
                size: 1
            }
        );
        assert_eq!(
            map[2],
            IdRange {
                inside: 1001,
                host: 1001,
                size: 64536
            }
        );
        // Every intermediate id 0..=65536 is used exactly once.
        let mut hosts: Vec<u32> = map.iter().flat_map(|r| r.host..r.host + r.size).collect();
        hosts.sort();
        assert_eq!(hosts, (0..=65536).collect::<Vec<_>>());
        assert_eq!(keep_id_map(0, 65536), None);
        assert_eq!(keep_id_map(70000, 65536), None);
        assert_eq!(
            intermediate_root_map(65536)[1],
            IdRange {
                inside: 1,
                host: 1,
                size: 65536
            }
        );
    }

    #[test]
    fn finds_by_name_or_id() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("subuid");
        std::fs::write(
            &f,
            "other:100000:65536\nalice:165536:65536\n1001:231072:1000\n",
        )
        .unwrap();
        assert_eq!(subordinate_range(&f, "alice", 1000), Some((165536, 65536)));
        assert_eq!(subordinate_range(&f, "bob", 1001), Some((231072, 1000)));
        assert_eq!(subordinate_range(&f, "carol", 1002), None);
        assert_eq!(
            subordinate_range(&dir.path().join("absent"), "alice", 1000),
            None
        );
    }

    #[test]
    fn maps() {
        assert_eq!(
            container_map(1000, None),
            vec![IdRange {
                inside: 0,
                host: 1000,
                size: 1
            }]
        );
        let m = container_map(1000, Some((100000, 200000)));
        assert_eq!(
            m[1],
            IdRange {
                inside: 1,
                host: 100000,
                size: 65536
            }
        );
    }
}
