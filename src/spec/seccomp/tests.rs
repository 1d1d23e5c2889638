use super::*;
use std::collections::HashSet;

fn rules(s: &Security) -> serde_json::Value {
    serde_json::to_value(filter(s).unwrap()).unwrap()
}

fn all() -> [Security; 4] {
    [
        Security::default(),
        Security {
            nested: Nested::Namespaces,
            multiarch: false,
        },
        Security {
            nested: Nested::Full,
            multiarch: false,
        },
        Security {
            nested: Nested::Off,
            multiarch: true,
        },
    ]
}

/// The names every rule of `action` covers, with and without conditions.
fn names_of(json: &serde_json::Value, action: &str, conditional: bool) -> HashSet<String> {
    json["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action && r.get("args").is_some() == conditional)
        .flat_map(|r| r["names"].as_array().unwrap().clone())
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn default_is_eperm_on_the_native_arch_without_flags() {
    let json = rules(&Security::default());
    assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(json["defaultErrnoRet"], 1);
    assert_eq!(
        json["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64"])
    );
    // runc 1.1 refuses a filter with flags.
    assert!(json.get("flags").is_none());
    let multi = rules(&all()[3]);
    assert_eq!(
        multi["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
    );
    assert!(names_of(&multi, "SCMP_ACT_ALLOW", false).contains("modify_ldt"));
}

/// runc drops a rule equal to the default action; libseccomp lets an unconditional
/// allow swallow conditional rules of the same syscall. Neither may happen here.
#[test]
fn no_rule_is_silently_dropped_or_swallowed() {
    for s in all() {
        let json = rules(&s);
        for r in json["syscalls"].as_array().unwrap() {
            if r["action"] == "SCMP_ACT_ERRNO" {
                assert_ne!(r["errnoRet"], 1, "{r} equals the default action");
            }
        }
        let plain = names_of(&json, "SCMP_ACT_ALLOW", false);
        let conditional: HashSet<String> = names_of(&json, "SCMP_ACT_ALLOW", true)
            .union(&names_of(&json, "SCMP_ACT_ERRNO", true))
            .cloned()
            .collect();
        let both: Vec<_> = plain.intersection(&conditional).collect();
        assert!(
            both.is_empty(),
            "{s:?}: {both:?} allowed outright and by rules"
        );
    }
}

#[test]
fn the_closed_surfaces_stay_closed() {
    let closed = [
        "unshare",
        "setns",
        "mount",
        "open_tree",
        "fsopen",
        "pivot_root",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "kexec_load",
        "init_module",
        "finit_module",
        "open_by_handle_at",
        "pidfd_getfd",
        "ioctl",
        "socket",
        "clone",
        "clone3",
        "keyctl",
        "personality",
        "modify_ldt",
    ];
    let json = rules(&Security::default());
    let plain = names_of(&json, "SCMP_ACT_ALLOW", false);
    for c in closed {
        assert!(!plain.contains(c), "{c} allowed outright");
    }
    // The nested settings open namespaces, never io_uring, bpf, perf or keyrings.
    for s in &all()[1..3] {
        let plain = names_of(&rules(s), "SCMP_ACT_ALLOW", false);
        assert!(plain.contains("setns"));
        assert_eq!(plain.contains("mount"), s.nested == Nested::Full);
        assert_eq!(plain.contains("unshare"), s.nested == Nested::Full);
        for c in [
            "bpf",
            "perf_event_open",
            "io_uring_setup",
            "keyctl",
            "userfaultfd",
        ] {
            assert!(!plain.contains(c), "{c} open with {s:?}");
        }
    }
    let enosys = names_of(&json, "SCMP_ACT_ERRNO", false);
    for c in ENOSYS_CALLS {
        assert!(enosys.contains(*c));
    }
}

#[test]
fn conditions_compare_what_the_kernel_reads() {
    let json = rules(&Security::default());
    let rules = json["syscalls"].as_array().unwrap();
    let with = |name: &str| -> Vec<&serde_json::Value> {
        rules
            .iter()
            .filter(|r| r["names"].as_array().unwrap().contains(&name.into()))
            .collect()
    };
    let clone = with("clone");
    assert_eq!(clone.len(), 1);
    assert_eq!(clone[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(clone[0]["args"][0]["value"], CLONE_NEW_MASK);
    assert_eq!(clone[0]["args"][0]["valueTwo"], 0);
    let ioctl_denies: Vec<_> = with("ioctl")
        .into_iter()
        .filter(|r| r["action"] == "SCMP_ACT_ERRNO")
        .collect();
    assert_eq!(ioctl_denies.len(), 2);
    for d in ioctl_denies {
        assert_eq!(d["errnoRet"], libc::EIO);
        assert_eq!(d["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(d["args"][0]["value"], LOW_32);
    }
    let mut families: Vec<u64> = with("socket")
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
        .map(|r| r["args"][0]["value"].as_u64().unwrap())
        .collect();
    families.dedup();
    assert_eq!(families, SOCKET_FAMILIES);
    // Every netlink allow names its protocol, so none swallows the netfilter deny.
    for r in with("socket") {
        if r["args"][0]["value"] == libc::AF_NETLINK {
            assert_eq!(r["args"][1]["index"], 2, "{r}");
        }
    }
    // Nested, a mount namespace stays closed unless the mount API is open too.
    let ns = serde_json::to_value(
        filter(&Security {
            nested: Nested::Namespaces,
            multiarch: false,
        })
        .unwrap(),
    )
    .unwrap();
    let clone = ns["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["names"].as_array().unwrap().contains(&"clone".into()))
        .unwrap()
        .clone();
    assert_eq!(clone["args"][0]["value"], CLONE_NEWNS);
}
