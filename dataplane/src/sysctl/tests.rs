use std::{fs, os::unix::fs::PermissionsExt};

use super::*;

/// A sysctl tree in a temporary directory with `net/netfilter/nf_conntrack_max` = 262144.
fn tree() -> (tempfile::TempDir, Sysctl) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("net/netfilter")).unwrap();
    fs::write(
        dir.path().join("net/netfilter/nf_conntrack_max"),
        "262144\n",
    )
    .unwrap();
    let sysctl = Sysctl::with_root(dir.path());
    (dir, sysctl)
}

#[test]
fn dotted_and_slashed_names_name_the_same_file() {
    let (dir, sysctl) = tree();
    let want = dir.path().join("net/netfilter/nf_conntrack_max");
    assert_eq!(sysctl.file("net.netfilter.nf_conntrack_max").path(), want);
    assert_eq!(sysctl.file("net/netfilter/nf_conntrack_max").path(), want);
    // A slashed name keeps dots that belong to an interface name.
    assert_eq!(
        sysctl.file("net/ipv4/conf/eth0.100/rp_filter").path(),
        dir.path().join("net/ipv4/conf/eth0.100/rp_filter")
    );
}

#[test]
fn reads_the_value_without_its_newline() {
    let (_dir, sysctl) = tree();
    assert_eq!(
        sysctl.read("net.netfilter.nf_conntrack_max").unwrap(),
        262144
    );
}

#[test]
fn ensure_writes_only_a_different_value_and_reports_the_old_one() {
    let (dir, sysctl) = tree();
    let name = "net.netfilter.nf_conntrack_max";
    assert_eq!(
        sysctl.ensure(name, 262144).unwrap(),
        Change::Unchanged(262144)
    );
    // A shorter value replaces the longer one whole (no "131072" + leftover digits).
    assert_eq!(
        sysctl.ensure(name, 1310).unwrap(),
        Change::Changed {
            old: 262144,
            new: 1310
        }
    );
    let text = fs::read_to_string(dir.path().join("net/netfilter/nf_conntrack_max")).unwrap();
    assert_eq!(text, "1310");
    assert_eq!(sysctl.read(name).unwrap(), 1310);
}

#[test]
fn a_missing_sysctl_is_not_found_and_is_not_created() {
    let (dir, sysctl) = tree();
    let name = "net.netfilter.nf_conntrack_udp_timeout";
    let err = sysctl.ensure(name, 33).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(
        err.to_string().contains("nf_conntrack_udp_timeout"),
        "{err}"
    );
    let err = sysctl.write(name, 33).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().starts_with("writing 33 to "), "{err}");
    assert!(
        !dir.path()
            .join("net/netfilter/nf_conntrack_udp_timeout")
            .exists()
    );
}

#[test]
fn a_non_integer_is_a_parse_error_naming_the_file() {
    let (dir, sysctl) = tree();
    fs::write(dir.path().join("net/netfilter/nf_conntrack_max"), "lots\n").unwrap();
    let err = sysctl.read("net.netfilter.nf_conntrack_max").unwrap_err();
    assert!(matches!(err, SysctlError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("nf_conntrack_max"), "{err}");
}

#[test]
fn the_mode_says_whether_a_sysctl_is_writable() {
    let (dir, sysctl) = tree();
    let name = "net.netfilter.nf_conntrack_max";
    assert!(sysctl.is_writable(name).unwrap());
    // How the kernel shows nf_conntrack_max outside the initial network namespace.
    let path = dir.path().join("net/netfilter/nf_conntrack_max");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
    assert!(!sysctl.is_writable(name).unwrap());
}

#[test]
fn an_int_file_anywhere_reads_and_ensures() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hashsize");
    fs::write(&path, "16384\n").unwrap();
    let hashsize = IntFile::new(&path);
    assert_eq!(hashsize.read().unwrap(), 16384);
    assert_eq!(
        hashsize.ensure(32768).unwrap(),
        Change::Changed {
            old: 16384,
            new: 32768
        }
    );
    assert_eq!(hashsize.read().unwrap(), 32768);
    // Negative values (oom_score_adj) round-trip.
    hashsize.write(-999).unwrap();
    assert_eq!(hashsize.read().unwrap(), -999);
}

#[test]
fn errors_are_classified_by_errno() {
    let write = |errno: Errno| SysctlError::Write {
        path: CONNTRACK_HASHSIZE.into(),
        value: 32768,
        source: io::Error::from_raw_os_error(errno as i32),
    };
    assert!(write(Errno::EROFS).is_read_only_fs());
    assert!(!write(Errno::EROFS).is_not_supported());
    assert!(write(Errno::EOPNOTSUPP).is_not_supported());
    assert!(!write(Errno::EACCES).is_read_only_fs());
    assert!(!write(Errno::EACCES).is_not_found());
}
