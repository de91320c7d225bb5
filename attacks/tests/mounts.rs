//! Attacks through the mount table: any user can add a mount point with any name (FUSE).

use std::path::Path;
use std::process::Command;

use stridemap_attacks::{Scratch, can, is_root, text};
use stridemap_shm::{PageBacking, SegmentKind, huge_probe};

/// Set in the child that runs in the private mount namespace: the tmpfs to probe.
const FOLDER_ENV: &str = "STRIDEMAP_ATTACK_THP_FOLDER";

/// Issue 19 item 2: a mount point whose name is not UTF-8, anywhere on the system, made the
/// whole of `/proc/self/mountinfo` unreadable as text, and Rust turned huge pages off without
/// a word (no mount found for any folder). In a private mount namespace (`unshare -m`, root)
/// the test mounts a tmpfs with `huge=within_size` and another on a folder named `\xff`,
/// then re-runs itself there to probe the first: transparent huge pages must be offered.
#[test]
fn a_non_utf8_mount_point_does_not_turn_huge_pages_off() {
    if let Some(folder) = std::env::var_os(FOLDER_ENV) {
        let probe = huge_probe(SegmentKind::File, Some(Path::new(&folder)), 4 << 20);
        println!("in the namespace: {}", probe.summary());
        assert_eq!(
            probe.chosen().map(|c| c.backing),
            Some(PageBacking::ThpFile),
            "{}",
            probe.summary()
        );
        return;
    }
    let unshared = is_root()
        && can("unshare", || {
            Command::new("unshare")
                .args(["-m", "true"])
                .status()
                .is_ok_and(|s| s.success())
        });
    if !unshared {
        println!("variant: NOT RUN: needs root and unshare -m to mount in a private namespace");
        return;
    }
    println!("variant: a private mount namespace (unshare -m)");
    let scratch = Scratch::new();
    let thp = scratch.join("thp");
    std::fs::create_dir(&thp).unwrap();
    let script = "set -e
        mount -t tmpfs -o size=64m,huge=within_size stridemap-thp \"$1\"
        odd=\"$2/$(printf '\\377')\"
        mkdir \"$odd\"
        mount -t tmpfs -o size=1m stridemap-odd \"$odd\"
        exec \"$0\" --exact a_non_utf8_mount_point_does_not_turn_huge_pages_off --nocapture \
            --test-threads=1";
    let o = Command::new("unshare")
        .args(["-m", "bash", "-c", script])
        .arg(std::env::current_exe().unwrap())
        .arg(&thp)
        .arg(&scratch.p)
        .env(FOLDER_ENV, &thp)
        .output()
        .unwrap();
    println!("{}", text(&o));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("in the namespace"), "{}", text(&o));
}
