//! Property tests of the profile parser with hostile input: any text, and any mutation of
//! a valid profile, gives a profile or a located error, never a panic. Bounded: a fixed
//! number of cases per run, so CI time stays flat.

// Tests may unwrap: a panic is a failure that says where.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use proptest::prelude::*;
use sandboxd::profile::{parse_profile, validate_name, ProfileError};

const VALID: &str = r#"description = "dev"
hostname = "dev"
[rootfs]
host = true
[process]
command = ["sh", "-c", "true"]
env = { A = "b" }
[[mount]]
source = "/"
destination = "/host"
readonly = true
[network]
mode = "none"
allow = ["10.0.0.0/8:443", "*.example.org"]
[restart]
policy = "on-failure"
max = 2
stop_timeout = "3s"
"#;

fn check(src: &str) {
    match parse_profile("fuzz", Path::new("/p/fuzz.toml"), src, Path::new("/")) {
        Ok(_) => {}
        Err(ProfileError::Invalid {
            line,
            column,
            key,
            message,
            ..
        }) => {
            let lines = src.split('\n').count();
            assert!(
                line >= 1 && line <= lines.max(1),
                "line {line} outside 1..={lines}"
            );
            assert!(column >= 1);
            assert!(
                !key.is_empty() && !message.is_empty(),
                "empty key or message for {src:?}: key {key:?} message {message:?}"
            );
        }
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_or_fails_with_a_location(src in "\\PC{0,400}") {
        check(&src);
    }

    #[test]
    fn mutated_profiles_parse_or_fail_with_a_location(at in 0usize..VALID.len(), cut in 0usize..40, insert in "[\\[\\]=\"'{}#,.\\n a-z0-9~/*:-]{0,12}") {
        let at = (0..=at).rev().find(|i| VALID.is_char_boundary(*i)).unwrap_or(0);
        let end = (at + cut).min(VALID.len());
        let end = (end..=VALID.len()).find(|i| VALID.is_char_boundary(*i)).unwrap_or(VALID.len());
        let src = format!("{}{}{}", &VALID[..at], insert, &VALID[end..]);
        check(&src);
    }

    #[test]
    fn names_outside_the_grammar_are_refused(name in "\\PC{0,80}") {
        let ok = validate_name(&name).is_ok();
        let grammar = !name.is_empty()
            && name.len() <= 64
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        prop_assert_eq!(ok, grammar);
        prop_assert!(!ok || (!name.contains('/') && name != ".." && !name.contains('\0')));
    }
}
