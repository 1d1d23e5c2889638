//! Spec tests: namespaces, maps, mounts and limits as the JSON runc reads.

use super::*;
use crate::profile::{Mount as ProfileMount, Profile};

/// A host context with subordinate ids, for other modules' tests.
pub(super) fn ctx() -> HostContext {
    ctx_with(true)
}

fn ctx_with(subids: bool) -> HostContext {
    let r = subids.then_some((100000, 65536));
    HostContext {
        uid: 1000,
        gid: 1000,
        subuid: r,
        subgid: r,
        init: "/opt/sandbox-init".into(),
        etc: "/etc".into(),
        home: "/".into(),
        homes: "/nonexistent/homes".into(),
        intermediate: false,
        nofile: (1024, 4096),
        limits: Enforcement::Rlimits { why: "test".into() },
        buses: "/run/user/1000/sandboxd/dbus".into(),
    }
}

#[test]
fn namespaces_maps_and_init() {
    let mut p = Profile::builtin_default();
    p.process.command = Some(vec!["/usr/bin/env".into()]);
    p.mounts.push(ProfileMount {
        source: "/var/tmp".into(),
        destination: "/work".into(),
        readonly: false,
    });
    p.limits.nofile = Some(512);
    let spec = build(
        &p,
        &ctx_with(true),
        Path::new("/b/rootfs"),
        &SessionEnv::new(),
        Some(Path::new("/b")),
        None,
    )
    .unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    let ns: Vec<&str> = json["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    for want in ["pid", "mount", "uts", "ipc", "cgroup", "user", "network"] {
        assert!(ns.contains(&want), "{want} missing from {ns:?}");
    }
    assert_eq!(
        json["linux"]["uidMappings"][0],
        serde_json::json!({"containerID": 0, "hostID": 1000, "size": 1})
    );
    assert_eq!(
        json["linux"]["uidMappings"][1],
        serde_json::json!({"containerID": 1, "hostID": 100000, "size": 65536})
    );
    assert_eq!(
        json["process"]["args"],
        serde_json::json!([INIT_PATH, "--channel", "--", "/usr/bin/env"])
    );
    assert_eq!(json["process"]["noNewPrivileges"], true);
    assert_eq!(json["root"]["readonly"], true);
    let mounts = json["mounts"].as_array().unwrap();
    let find = |d: &str| {
        mounts
            .iter()
            .find(|m| m["destination"] == d)
            .unwrap_or_else(|| panic!("no mount {d}"))
    };
    let opts = |d: &str| find(d)["options"].as_array().unwrap().clone();
    // Read-only, nosuid and nodev at every depth of a bind, not at its top only.
    for want in ["ro", "rro", "nosuid", "rnosuid", "nodev", "rnodev"] {
        assert!(opts("/usr").contains(&want.into()), "/usr lacks {want}");
    }
    for want in ["rnosuid", "rnodev"] {
        assert!(opts("/work").contains(&want.into()), "/work lacks {want}");
    }
    assert!(!opts("/work").contains(&"ro".into()));
    assert!(!opts("/work").contains(&"rro".into()));
    assert_eq!(find(INIT_PATH)["source"], "/opt/sandbox-init");
    // The generated resolver files replace the host's, once each.
    assert_eq!(find("/etc/hosts")["source"], "/b/hosts");
    assert_eq!(find("/etc/resolv.conf")["source"], "/b/resolv.conf");
    assert_eq!(
        mounts
            .iter()
            .filter(|m| m["destination"] == "/etc/hosts")
            .count(),
        1
    );
    let caps = json["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap();
    assert!(!caps.contains(&"CAP_SYS_ADMIN".into()));
    assert_eq!(json["process"]["rlimits"][0]["hard"], 512);
}

#[test]
fn single_map_without_subordinate_ids() {
    let spec = build(
        &Profile::builtin_default(),
        &ctx_with(false),
        Path::new("/r"),
        &SessionEnv::new(),
        None,
        None,
    )
    .unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["linux"]["gidMappings"].as_array().unwrap().len(), 1);
}

#[test]
fn limits_become_a_scope_or_rlimits() {
    let mut p = Profile::builtin_default();
    p.name = "capped".into();
    p.limits.pids = Some(64);
    p.limits.memory = Some(256 << 20);
    let json_for = |ctx: &HostContext| {
        let spec = build(&p, ctx, Path::new("/r"), &SessionEnv::new(), None, None).unwrap();
        serde_json::to_value(&spec).unwrap()
    };
    let caps = |json: &serde_json::Value| json["process"]["capabilities"]["bounding"].clone();

    let mut scoped = ctx_with(true);
    scoped.limits = Enforcement::SystemdScopes;
    let json = json_for(&scoped);
    assert_eq!(json["linux"]["cgroupsPath"], "app.slice:sandboxd:capped");
    assert_eq!(json["linux"]["resources"]["pids"]["limit"], 64);
    assert_eq!(json["linux"]["resources"]["memory"]["limit"], 256 << 20);
    assert_eq!(json["linux"]["resources"]["memory"]["swap"], 256 << 20);
    assert_eq!(json["process"]["rlimits"].as_array().unwrap().len(), 1);
    assert!(caps(&json)
        .as_array()
        .unwrap()
        .contains(&"CAP_SETUID".into()));
    // Without limits a sandbox stays out of scopes and keeps every capability.
    let free = build(
        &Profile::builtin_default(),
        &scoped,
        Path::new("/r"),
        &SessionEnv::new(),
        None,
        None,
    )
    .unwrap();
    let free = serde_json::to_value(&free).unwrap();
    assert!(free["linux"].get("cgroupsPath").is_none());
    assert!(caps(&free)
        .as_array()
        .unwrap()
        .contains(&"CAP_SETUID".into()));
    let defaults = Profile::builtin_default().limits;
    assert!(!crate::cgroups::in_scope(&scoped.limits, &defaults));
    assert!(crate::cgroups::in_scope(&scoped.limits, &p.limits));
    assert!(!crate::cgroups::in_scope(&ctx_with(true).limits, &p.limits));

    let json = json_for(&ctx_with(true));
    assert!(json["linux"].get("cgroupsPath").is_none());
    assert!(json["linux"]["resources"].get("pids").is_none());
    assert!(json["linux"]["resources"].get("memory").is_none());
    let rlimits = json["process"]["rlimits"].as_array().unwrap();
    let find = |t: &str| {
        rlimits
            .iter()
            .find(|r| r["type"] == t)
            .unwrap_or_else(|| panic!("no {t}"))
    };
    assert_eq!(find("RLIMIT_NPROC")["hard"], 64);
    assert_eq!(find("RLIMIT_NPROC")["soft"], 64);
    assert_eq!(find("RLIMIT_DATA")["hard"], 256 << 20);
    // Without setuid/setgid, root inside cannot move processes to ids the count misses.
    let caps = caps(&json);
    assert!(!caps.as_array().unwrap().contains(&"CAP_SETUID".into()));
    assert!(!caps.as_array().unwrap().contains(&"CAP_SETGID".into()));
    assert!(caps.as_array().unwrap().contains(&"CAP_CHOWN".into()));
}

#[test]
fn an_overlaid_host_root_binds_its_usr_layer_writable() {
    let spec = build(
        &Profile::builtin_default(),
        &ctx_with(true),
        Path::new("/r"),
        &SessionEnv::new(),
        None,
        Some(Path::new("/layers/x/merged")),
    )
    .unwrap();
    let usr: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/usr"))
        .collect();
    assert_eq!(usr.len(), 1);
    assert_eq!(
        usr[0].source().as_deref(),
        Some(Path::new("/layers/x/merged"))
    );
    let opts = usr[0].options().clone().unwrap();
    assert!(
        !opts.contains(&"ro".to_string()) && opts.contains(&"rnosuid".to_string()),
        "{opts:?}"
    );
}
