//! Attacks on the orphan sweep (`stridemap gc`, and the sweep every `Pool::new()` runs).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use stridemap_attacks::{ORPHAN, Scratch, can, cli, is_root, text};

/// A planted orphan: `root/name` holding `seg-0`.
fn orphan(root: &Path, name: &str) -> PathBuf {
    let p = root.join(name);
    std::fs::create_dir(&p).unwrap();
    std::fs::write(p.join("seg-0"), b"segment").unwrap();
    p
}

/// Issue 10 item 1: a folder swapped for a symbolic link while the sweep works through it
/// must never make the sweep delete a file outside its root. A swapper thread flips the
/// folder's name between a real folder and a link to a victim folder for a bounded time
/// while the sweep runs in a loop; some sweeps must have removed the real folder meanwhile.
#[test]
fn the_gc_symlink_swap_never_deletes_outside_the_root() {
    let root = Scratch::new();
    let outside = Scratch::new();
    let victim = outside.join("seg-0");
    std::fs::write(&victim, b"victim").unwrap();
    let name = root.join(ORPHAN);
    let link = root.join("link");
    std::fs::create_dir(&name).unwrap();
    std::os::unix::fs::symlink(&outside.p, &link).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, root, name) = (stop.clone(), root.p.clone(), name.clone());
        std::thread::spawn(move || {
            let dir = rustix::fs::open(
                &root,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap();
            let mut swaps = 0u64;
            let exchange = || {
                rustix::fs::renameat_with(
                    &dir,
                    ORPHAN,
                    &dir,
                    "link",
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .is_ok()
            };
            while !stop.load(Ordering::Relaxed) {
                // Here the real folder has the name: give it its file back if a sweep
                // removed them (never through the link).
                let _ = std::fs::create_dir(&name);
                let _ = std::fs::write(name.join("seg-0"), b"segment");
                std::thread::sleep(Duration::from_micros(swaps % 50));
                // Now the link has it, for a while (renameat2 RENAME_EXCHANGE: atomic).
                if exchange() {
                    std::thread::sleep(Duration::from_micros(swaps % 70));
                    while !exchange() {}
                }
                swaps += 1;
            }
            swaps
        })
    };
    let (mut sweeps, mut deleted, mut removed) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if let Ok(r) = stridemap_shm::sweep(std::slice::from_ref(&root.p), false) {
            removed += r.removed.len() as u64;
        }
        sweeps += 1;
        if !victim.exists() {
            deleted += 1;
            std::fs::write(&victim, b"victim").unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    println!(
        "{sweeps} sweeps against {swaps} swaps: {removed} folders removed, {deleted} deletions \
         outside the root"
    );
    assert!(sweeps > 100 && swaps > 100, "the race did not run");
    // Issue 19 item 6: a sweep that removed nothing would pass the check below.
    assert!(
        removed > 0,
        "no sweep removed the folder: the race proved nothing"
    );
    assert_eq!(deleted, 0, "the sweep deleted a file outside its root");
}

/// Issue 10 item 2: a live producer in another PID namespace (its pid means nothing here)
/// is alive because it holds its folder's lock, and so are its recycled (unlocked) segments.
/// Run under `unshare -p -f --mount-proc` where it works (root); else the producer runs
/// here and its folder is renamed to a pid that is not alive, which is what another
/// namespace looks like from here.
#[test]
fn a_producer_in_another_pid_namespace_is_not_swept() {
    let root = Scratch::new();
    let producer = env!("CARGO_BIN_EXE_attack-producer");
    let unshared = can("unshare", || {
        Command::new("unshare")
            .args(["-p", "-f", "--mount-proc", "true"])
            .status()
            .is_ok_and(|s| s.success())
    });
    let mut cmd = if unshared {
        println!("variant: producer under unshare -p -f --mount-proc");
        let mut c = Command::new("unshare");
        c.args(["-p", "-f", "--mount-proc", producer]);
        c
    } else {
        println!("variant: unshare unavailable; the live producer's folder gets a dead pid");
        Command::new(producer)
    };
    let mut child = cmd
        .arg(&root.p)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let mut folder = PathBuf::from(line.trim().strip_prefix("folder ").expect(&line));
    if !unshared {
        let renamed = root.join(ORPHAN);
        std::fs::rename(&folder, &renamed).unwrap();
        folder = renamed;
    }
    let name = folder.file_name().unwrap().to_str().unwrap().to_string();
    println!("producer folder {name}");
    let o = cli()
        .args(["gc", "--root", root.p.to_str().unwrap()])
        .output()
        .unwrap();
    println!("{}", text(&o));
    let survived = folder.exists() && std::fs::read_dir(&folder).unwrap().count() == 1;
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    child.wait().unwrap();
    assert!(
        survived,
        "the live producer's folder or recycled segment was swept"
    );
    assert!(rest.contains("reused ok"), "the producer says: {rest}");
    assert!(text(&o).contains("owner alive"), "{}", text(&o));
}

/// Issue 10 item 3: a folder that cannot be deleted (a mount point inside it) is reported,
/// the sweep goes on with the other orphans, the exit code says something failed, and a dry
/// run does not claim it would remove it.
#[test]
fn an_undeletable_folder_is_reported_and_the_sweep_goes_on() {
    let root = Scratch::new();
    let names: Vec<String> = (0..4)
        .map(|i| format!("stridemap-{}-0-0123456789abcdef0123456789abcde{i}", i + 1))
        .collect();
    // Made first, the stuck folder is listed last or first depending on the filesystem:
    // either way three good orphans surround it.
    let stuck = orphan(&root.p, &names[0]);
    let others: Vec<PathBuf> = names[1..].iter().map(|n| orphan(&root.p, n)).collect();
    let target = stuck.join("seg-0");
    let elsewhere = Scratch::new();
    let source = elsewhere.join("file");
    std::fs::write(&source, b"a regular file").unwrap();
    let mounted = is_root()
        && can("mount", || {
            Command::new("mount")
                .arg("--bind")
                .arg(&source)
                .arg(&target)
                .status()
                .is_ok_and(|s| s.success())
        });
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = mounted.then(|| Unmount(target.clone()));
    // Without mounts the stuck folder is read-only (0500), which stops anyone but root; so
    // root runs the sweep as nobody (uid 65534), whose folders these then are.
    let mut as_nobody = false;
    if mounted {
        println!("variant: a bind mount inside the stuck folder");
    } else {
        use std::os::unix::fs::PermissionsExt;
        if is_root() {
            println!("variant: no mounts; a read-only folder, swept by uid 65534 (setpriv)");
            as_nobody = true;
            std::fs::set_permissions(&root.p, std::fs::Permissions::from_mode(0o777)).unwrap();
            for f in std::iter::once(&stuck).chain(&others) {
                for p in [f.join("seg-0"), f.clone()] {
                    std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
                }
            }
        } else {
            println!("variant: no mounts; a read-only folder");
        }
        std::fs::set_permissions(&stuck, std::fs::Permissions::from_mode(0o500)).unwrap();
    }
    let gc = |extra: &[&str]| {
        let mut c = cli();
        if as_nobody {
            let bin = c.get_program().to_owned();
            c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(bin)
                .env("RUST_LOG", "warn");
        }
        c.arg("gc")
            .args(extra)
            .args(["--root", root.p.to_str().unwrap()]);
        c.output().unwrap()
    };
    let dry = gc(&["--dry-run"]);
    let dry_text = text(&dry);
    println!("{dry_text}");
    assert!(
        !dry_text.contains(&format!("would remove {}", stuck.display())),
        "the dry run promises to remove a folder it cannot remove"
    );
    let o = gc(&[]);
    println!("{}", text(&o));
    for f in &others {
        assert!(!f.exists(), "{} was left: the sweep stopped", f.display());
    }
    assert_ne!(o.status.code(), Some(0), "the exit code hides the failure");
    assert!(
        text(&o).contains(&stuck.display().to_string()),
        "{}",
        text(&o)
    );
}

/// Issue 10 item 8: a dead producer's folder kept because it holds something stridemap never
/// makes says what that is, not "files still mapped".
#[test]
fn gc_labels_say_why_a_folder_is_kept() {
    let root = Scratch::new();
    let sub = orphan(&root.p, "stridemap-2-0-0123456789abcdef0123456789abcdef");
    std::fs::create_dir(sub.join("inner")).unwrap();
    let fifo = orphan(&root.p, "stridemap-3-0-0123456789abcdef0123456789abcdef");
    let made = Command::new("mkfifo")
        .arg(fifo.join("pipe"))
        .status()
        .unwrap();
    assert!(made.success());
    let link = orphan(&root.p, "stridemap-4-0-0123456789abcdef0123456789abcdef");
    std::os::unix::fs::symlink("/etc/passwd", link.join("ln")).unwrap();
    let o = cli()
        .args(["gc", "--root", root.p.to_str().unwrap()])
        .output()
        .unwrap();
    let t = text(&o);
    println!("{t}");
    assert!(!t.contains("still mapped"), "{t}");
    for (f, kind) in [(&sub, "folder"), (&fifo, "FIFO"), (&link, "symbolic link")] {
        assert!(
            t.lines()
                .any(|l| l.contains(&f.display().to_string()) && l.contains(kind)),
            "{kind}: {t}"
        );
        assert!(f.exists());
    }
}

/// Issue 10 item 1: the sweep removes only the caller's own folders; another user's needs
/// `--all-users`.
#[test]
fn gc_sweeps_only_the_callers_folders() {
    if !is_root() {
        println!("variant: not root, cannot plant another user's folder; nothing to check");
        return;
    }
    let root = Scratch::new();
    let theirs = orphan(&root.p, ORPHAN);
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let o = cli()
        .args(["gc", "--root", root.p.to_str().unwrap()])
        .output()
        .unwrap();
    println!("{}", text(&o));
    assert!(theirs.exists(), "another user's folder was swept");
    assert!(text(&o).contains("--all-users"), "{}", text(&o));
    let o = cli()
        .args(["gc", "--all-users", "--root", root.p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!theirs.exists());
}

/// Issue 19 item 5: a dead producer's folder with 300 files was kept forever at an fd limit
/// of 256 (EMFILE): the sweep held an exclusive lock fd per file. It locks and unlinks them
/// in bounded batches now. `stridemap gc` runs with RLIMIT_NOFILE 256 (bash's ulimit).
#[test]
fn gc_removes_a_folder_of_300_files_at_an_fd_limit_of_256() {
    let root = Scratch::new();
    let folder = root.join(ORPHAN);
    std::fs::create_dir(&folder).unwrap();
    for i in 0..300 {
        std::fs::write(folder.join(format!("seg-{i}")), b"segment").unwrap();
    }
    let bin = cli().get_program().to_owned();
    let o = Command::new("bash")
        .args(["-c", "ulimit -n 256 && exec \"$0\" gc --root \"$1\""])
        .arg(bin)
        .arg(&root.p)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    println!("{}", text(&o));
    assert!(
        !folder.exists(),
        "the folder of 300 files was kept: {}",
        text(&o)
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
