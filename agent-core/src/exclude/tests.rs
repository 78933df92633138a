use alloc::string::ToString;

use super::*;

fn m(pattern: &str, name: &str) -> bool {
    glob_match(pattern, name).unwrap()
}

#[test]
fn matches_like_go_filepath_match() {
    // Cases from Go's path/filepath match_test.go.
    let table: &[(&str, &str, bool)] = &[
        ("abc", "abc", true),
        ("*", "abc", true),
        ("*c", "abc", true),
        ("a*", "a", true),
        ("a*", "abc", true),
        ("a*", "ab/c", false),
        ("a*/b", "abc/b", true),
        ("a*/b", "a/c/b", false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
        ("a*b?c*x", "abxbbxdbxebxczzx", true),
        ("a*b?c*x", "abxbbxdbxebxczzy", false),
        ("ab[c]", "abc", true),
        ("ab[b-d]", "abc", true),
        ("ab[e-g]", "abc", false),
        ("ab[^c]", "abc", false),
        ("ab[^b-d]", "abc", false),
        ("ab[^e-g]", "abc", true),
        ("a\\*b", "a*b", true),
        ("a\\*b", "ab", false),
        ("a?b", "a☺b", true),
        ("a[^a]b", "a☺b", true),
        ("a???b", "a☺b", false),
        ("a[^a][^a][^a]b", "a☺b", false),
        ("[a-ζ]*", "α", true),
        ("*[a-ζ]", "A", false),
        ("a?b", "a/b", false),
        ("a*b", "a/b", false),
        ("[\\]a]", "]", true),
        ("[\\-]", "-", true),
        ("[x\\-]", "x", true),
        ("[x\\-]", "-", true),
        ("[x\\-]", "z", false),
        ("[\\-x]", "x", true),
        ("[\\-x]", "-", true),
        ("[\\-x]", "a", false),
        ("*x", "xxx", true),
    ];
    for (pattern, name, want) in table {
        assert_eq!(m(pattern, name), *want, "{pattern:?} {name:?}");
    }
}

#[test]
fn refuses_malformed_patterns() {
    for pattern in [
        "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "a\\", "[a-]",
        "*[", "a*[",
    ] {
        assert!(
            matches!(glob_match(pattern, "a"), Err(ExcludeError::BadPattern(_))),
            "{pattern:?}"
        );
    }
}

#[test]
fn matches_the_readme_patterns() {
    let set = ExcludeSet::parse(
        "*-server-api, *-janus,*-middleware-*,*-provisioning,*-reports-api,,*_loki,*_prometheus, ",
    )
    .unwrap();
    for name in [
        "nethvoice103-server-api",
        "nethvoice103-janus",
        "nethvoice103-middleware-x",
        "metrics1_loki",
        "metrics1_prometheus",
    ] {
        assert!(set.is_excluded(name), "{name}");
    }
    for name in [
        "nethvoice103-ui",
        "cluster-admin",
        "metrics1_grafana",
        "janus",
    ] {
        assert!(!set.is_excluded(name), "{name}");
    }
}

#[test]
fn matching_is_case_sensitive_and_whole_name() {
    let set = ExcludeSet::parse("web").unwrap();
    assert!(set.is_excluded("web"));
    assert!(!set.is_excluded("Web"));
    assert!(!set.is_excluded("web1"));
    assert!(!set.is_excluded("my-web"));
}

#[test]
fn empty_spec_excludes_nothing() {
    let set = ExcludeSet::parse(" , ,").unwrap();
    assert!(set.is_empty());
    assert!(!set.is_excluded("anything"));
    assert!(ExcludeSet::default().is_empty());
}

#[test]
fn malformed_pattern_in_a_spec_is_named() {
    let err = ExcludeSet::parse("ok-*, bad[").unwrap_err();
    assert_eq!(err, ExcludeError::BadPattern("bad[".into()));
    assert_eq!(err.to_string(), "exclude pattern \"bad[\" is malformed");
}

#[test]
fn refuses_oversized_specs() {
    let long = "a".repeat(MAX_PATTERN + 1);
    assert!(matches!(
        ExcludeSet::parse(&long),
        Err(ExcludeError::PatternTooLong { .. })
    ));
    let many = alloc::vec!["x"; MAX_PATTERNS + 1].join(",");
    assert_eq!(
        ExcludeSet::parse(&many).unwrap_err(),
        ExcludeError::TooManyPatterns {
            count: MAX_PATTERNS + 1,
            max: MAX_PATTERNS
        }
    );
}

#[test]
fn many_stars_do_not_backtrack_exponentially() {
    // Exponential backtracking would take ages on this; Go's algorithm is linear per chunk.
    let pattern = "a*".repeat(100) + "b";
    let name = "a".repeat(10_000);
    assert!(!m(&pattern, &name));
    let pattern = "*a".repeat(100);
    assert!(m(&pattern, &name));
}
