//! Attacks on the `stridemap` command: default roots, exports, inputs, outputs, arguments.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stridemap_attacks::{
    Scratch, Unmount, cli, describe_bytes, is_root, run_for, small_tmpfs, text,
};

/// A `stridemap-*` entry of `base` holding a file `x` (or, for `None`, a plain file named
/// like a folder), and a descriptor of that file.
fn plant(base: &Path, name: &str, mode: Option<u32>) -> (PathBuf, PathBuf) {
    let entry = base.join(name);
    let file = match mode {
        Some(m) => {
            std::fs::create_dir(&entry).unwrap();
            let f = entry.join("x");
            std::fs::write(&f, b"planted data").unwrap();
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(m)).unwrap();
            f
        }
        None => {
            std::fs::write(&entry, b"planted data").unwrap();
            entry.clone()
        }
    };
    let desc = base.join(format!("{name}.smd"));
    describe_bytes(&file, &desc);
    (entry, desc)
}

/// `stridemap export DESC` with `base` as the only temp base (`$STRIDEMAP_TEMP_FOLDER`, and
/// /dev/shm and the temp dir, which hold none of these names).
fn export_default(base: &Path, desc: &Path) -> std::process::Output {
    let out = base.join("out.npy");
    let _ = std::fs::remove_file(&out);
    cli()
        .args([
            "export",
            desc.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .env("STRIDEMAP_TEMP_FOLDER", base)
        .output()
        .unwrap()
}

/// Issue 10 item 5: the default roots accept a `stridemap-*` entry only when it is a folder
/// of this user with mode 0700. Planted: another user's folder, a plain file, a 0755 folder,
/// a link to a private folder. The user's own private folder is the control.
#[test]
fn planted_default_root_entries_are_refused() {
    let base = Scratch::new();
    let (_, good) = plant(&base.p, "stridemap-mine", Some(0o700));
    let o = export_default(&base.p, &good);
    assert_eq!(o.status.code(), Some(0), "control: {}", text(&o));

    let mut planted = vec![
        plant(&base.p, "stridemap-file", None),
        plant(&base.p, "stridemap-wide", Some(0o755)),
    ];
    let link = base.join("stridemap-link");
    std::os::unix::fs::symlink(base.join("stridemap-mine"), &link).unwrap();
    let link_desc = base.join("link.smd");
    let link_file = link.join("x");
    describe_bytes(&link_file, &link_desc);
    planted.push((link, link_desc));
    if is_root() {
        let theirs = plant(&base.p, "stridemap-theirs", Some(0o700));
        std::os::unix::fs::chown(&theirs.0, Some(65534), Some(65534)).unwrap();
        planted.push(theirs);
    } else {
        println!("variant: not root; the foreign-uid folder is not planted");
    }
    for (entry, desc) in planted {
        let o = export_default(&base.p, &desc);
        let t = text(&o);
        println!("{}: {t}", entry.display());
        assert_eq!(
            o.status.code(),
            Some(3),
            "{} was accepted: {t}",
            entry.display()
        );
        assert!(t.contains("O2") && t.contains("--allow-root"), "{t}");
        assert!(!base.join("out.npy").exists());
    }
}

/// Issue 10 item 6: exporting a broadcast view (stride 0 over a 1-byte buffer) of a huge
/// logical size is refused before anything is written, naming --max-bytes. The output goes
/// to a 64 MiB tmpfs where mounts work (root), so that a build without the check fails
/// quickly (ENOSPC) instead of filling a disk; elsewhere the export is killed after 10 s.
#[test]
fn the_broadcast_export_is_refused_and_leaves_no_file() {
    let dir = Scratch::new();
    let data = dir.join("one-byte");
    std::fs::write(&data, [7u8]).unwrap();
    let desc = dir.join("broadcast.smd");
    let o = cli()
        .args(["describe", data.to_str().unwrap(), "--dtype", "|u1"])
        .args(["--shape", "1099511627776", "--strides", "0", "-o"])
        .arg(&desc)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let small = dir.join("small");
    std::fs::create_dir(&small).unwrap();
    let guard = small_tmpfs(&small, "64m");
    let mounted = guard.is_some();
    println!(
        "variant: {}",
        if mounted {
            "output on a 64 MiB tmpfs"
        } else {
            "no tmpfs; a runaway export is killed after 10 s"
        }
    );
    let out = small.join("out.npy");
    let root = dir.p.to_str().unwrap();
    for extra in [&[][..], &["--max-bytes", "1M"][..]] {
        let got = run_for(
            cli()
                .args(["export", desc.to_str().unwrap(), "--allow-root", root, "-o"])
                .arg(&out)
                .args(extra),
            Duration::from_secs(10),
        );
        let o = got.expect("the export was still writing after 10 s");
        let t = text(&o);
        println!("{extra:?}: {t}");
        assert_ne!(o.status.code(), Some(0), "{t}");
        assert!(t.contains("--max-bytes"), "{t}");
        let left: Vec<_> = std::fs::read_dir(&small).unwrap().flatten().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

/// Issue 10 item 7: `/dev/zero` and a FIFO as inputs of inspect, npy and export are refused
/// at once (no unbounded read, no hang).
#[test]
fn dev_zero_and_fifo_inputs_are_refused_quickly() {
    let dir = Scratch::new();
    let fifo = dir.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let out = dir.join("out");
    let f = fifo.to_str().unwrap();
    let o = out.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["inspect", "/dev/zero"],
        vec!["inspect", f],
        vec!["npy", f, "-o", o],
        vec!["npy", "/dev/zero", "-o", o],
        vec!["export", f, "-o", o],
        vec!["export", "/dev/zero", "-o", o],
    ];
    for args in cases {
        // A memory cap, so that a build that reads /dev/zero to the end fails fast.
        let mut c = Command::new("sh");
        c.args(["-c", "ulimit -v 1000000; exec \"$@\"", "sh"]);
        let bin = cli().get_program().to_owned();
        c.arg(bin).args(&args);
        let got = run_for(&mut c, Duration::from_secs(5));
        let o = got.unwrap_or_else(|| panic!("{args:?} still ran after 5 s"));
        let t = text(&o);
        assert!(matches!(o.status.code(), Some(1 | 3)), "{args:?}: {t}");
        assert!(
            t.contains("not a regular file"),
            "{args:?} should say why: {t}"
        );
        assert!(!out.exists());
    }
}

/// Issue 10 items 9 and 10: negative numbers in list arguments, and a length-1 axis whose
/// stride points past the buffer (numpy's `a[::2]` of two elements) described with stride 0.
#[test]
fn list_arguments_take_negative_numbers() {
    let dir = Scratch::new();
    let data = dir.join("f.bin");
    let mut bytes = vec![0u8; 64];
    for i in 0..5 {
        bytes.extend((i as f64).to_le_bytes());
    }
    std::fs::write(&data, &bytes).unwrap();
    let d = data.to_str().unwrap();
    let desc = dir.join("d");
    let ds = desc.to_str().unwrap();
    for args in [
        &["--shape", "5", "--strides", "-8", "--offset", "96"][..],
        &["--shape", "2,2", "--strides", "-16,8", "--offset", "80"],
        &["--shape", "2,2", "--strides", "16,-8", "--offset", "72"],
        &["--shape", "1", "--strides", "1000", "--offset", "64"],
    ] {
        let o = cli()
            .args(["describe", d, "--dtype", "<f8", "-o", ds])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
    }
    let o = cli().args(["inspect", ds, "--json"]).output().unwrap();
    assert!(text(&o).contains("\"strides\":[0]"), "{}", text(&o));
    let o = cli()
        .args(["describe", d, "--dtype", "<f8", "--shape", "-1", "-o", ds])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!text(&o).contains("unexpected argument"), "{}", text(&o));
}

/// Issue 10 item 11: an existing output is replaced; a symbolic link at the target is
/// replaced, never written through.
#[test]
fn outputs_replace_the_target_and_never_follow_a_link() {
    let dir = Scratch::new();
    let data = dir.join("f.bin");
    std::fs::write(&data, [1u8; 16]).unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    let out = dir.join("out.smd");
    std::fs::write(&out, b"old").unwrap();
    let link = dir.join("link.smd");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for target in [&out, &link] {
        let o = cli()
            .args([
                "describe",
                data.to_str().unwrap(),
                "--dtype",
                "|u1",
                "--shape",
                "16",
            ])
            .arg("-o")
            .arg(target)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(std::fs::read(target).unwrap().len(), 1024);
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
}

/// Issue 10 item 12: the O2 message of the command names its flag, not the Rust API.
#[test]
fn the_o2_message_names_allow_root() {
    let dir = Scratch::new();
    let data = dir.join("f.bin");
    std::fs::write(&data, [1u8; 16]).unwrap();
    let desc = dir.join("d.smd");
    describe_bytes(&data, &desc);
    let o = cli()
        .args(["export", desc.to_str().unwrap(), "-o"])
        .arg(dir.join("o.npy"))
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(
        t.contains("--allow-root") && !t.contains("OpenOptions"),
        "{t}"
    );
}

/// A scratch folder with a 64 MiB tmpfs mounted on its `small` folder (unmounted first when
/// the tuple drops), saying which variant runs: `None` (said) where it cannot be mounted.
fn tmpfs_scratch(variant: &str) -> Option<(Unmount, Scratch, PathBuf)> {
    let dir = Scratch::new();
    let small = dir.join("small");
    std::fs::create_dir(&small).unwrap();
    let Some(guard) = small_tmpfs(&small, "64m") else {
        println!("variant: NOT RUN: needs a tmpfs of its own (root, mount)");
        return None;
    };
    println!("variant: {variant}");
    Some((guard, dir, small))
}

/// Free bytes of the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    let st = rustix::fs::statvfs(dir).unwrap();
    st.f_bavail * st.f_frsize
}

/// Issue 19 item 3: with no `--max-bytes`, `export` took all the free space as its cap: a
/// 1-byte broadcast just small enough filled a 64 MiB tmpfs to 0 bytes. The default now
/// leaves the margin the producers leave on a temp root (4 MiB and 1% of the size).
#[test]
fn the_default_export_cap_leaves_free_space() {
    let Some((_guard, dir, small)) = tmpfs_scratch("output on a 64 MiB tmpfs") else {
        return;
    };
    let free = free_bytes(&small);
    let data = dir.join("one-byte");
    std::fs::write(&data, [7u8]).unwrap();
    let desc = dir.join("broadcast.smd");
    // The .npy's header fits in the last page: the file takes every free byte.
    let n = (free - 4096).to_string();
    let o = cli()
        .args(["describe", data.to_str().unwrap(), "--dtype", "|u1"])
        .args(["--shape", &n, "--strides", "0", "-o"])
        .arg(&desc)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let got = run_for(
        cli()
            .args(["export", desc.to_str().unwrap(), "--allow-root"])
            .arg(&dir.p)
            .arg("-o")
            .arg(small.join("out.npy")),
        Duration::from_secs(30),
    )
    .expect("the export hung");
    let t = text(&got);
    println!("{t}");
    let left = free_bytes(&small);
    println!("{free} bytes free before, {left} after");
    assert_ne!(
        got.status.code(),
        Some(0),
        "the export filled the tmpfs: {t}"
    );
    assert!(t.contains("--max-bytes") && t.contains("margin"), "{t}");
    assert_eq!(left, free);
    assert_eq!(std::fs::read_dir(&small).unwrap().count(), 0);
}

/// Issue 19 item 3: a source truncated while `export` copies it killed the CLI with SIGBUS
/// (it read the map), leaving its hidden `.tmp` output behind. Now it reads the file with
/// pread and fails with a message, removing the temporary. Source and output are on a tmpfs
/// of the test's own; the source (24 MiB, exported with stride 2 so that the copy takes a
/// while) is truncated after a growing delay until one truncation lands mid-export.
#[test]
fn a_source_truncated_mid_export_fails_cleanly() {
    use std::os::unix::process::ExitStatusExt;
    let Some((_guard, dir, small)) = tmpfs_scratch("source and output on a 64 MiB tmpfs") else {
        return;
    };
    let (src, out) = (small.join("src"), small.join("out"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&out).unwrap();
    const LEN: u64 = 24 << 20;
    let data = src.join("data");
    let desc = dir.join("strided.smd");
    let mut mid_export = 0;
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80, 160, 320] {
        let f = std::fs::File::create(&data).unwrap();
        f.set_len(LEN).unwrap();
        std::io::Write::write_all(&mut &f, &vec![1u8; LEN as usize]).unwrap();
        let o = cli()
            .args(["describe", data.to_str().unwrap(), "--dtype", "|u1"])
            .args(["--shape", &(LEN / 2).to_string(), "--strides", "2", "-o"])
            .arg(&desc)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let child = cli()
            .args(["export", desc.to_str().unwrap(), "--allow-root"])
            .arg(&src)
            .arg("-o")
            .arg(out.join("out.npy"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        f.set_len(0).unwrap();
        let o = child.wait_with_output().unwrap();
        let t = text(&o);
        println!("truncated after {delay_ms} ms: {:?} {}", o.status, t.trim());
        assert_eq!(o.status.signal(), None, "the export was killed: {t}");
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "out.npy")
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        if o.status.success() {
            continue; // done before the truncation (or refused at open: no file yet)
        }
        if t.contains("truncated while being read") {
            mid_export += 1;
            break;
        }
    }
    assert!(mid_export > 0, "no truncation landed mid-export");
}
