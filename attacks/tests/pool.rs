//! Attacks on the producer's pool (`stridemap_shm::Pool`) from its own process tree.

use std::time::{Duration, Instant};

use stridemap::OpenOptions;
use stridemap_attacks::Scratch;
use stridemap_shm::{Order, Pool, PoolConfig, SegmentKind};

/// Waits up to `limit` for child `pid`; kills it if it is still running then. Its exit
/// status, or `None` when it had to be killed.
fn wait_for(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid pointer to a local.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        assert!(r == 0, "waitpid: {}", std::io::Error::last_os_error());
        if start.elapsed() > limit {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Issue 19 item 4: a child `fork`ed from a producer shares the open file descriptions of
/// its pool's segments and folder, and so their `flock` locks. A child that dropped its copy
/// of a shared array and of the pool took the segment's lock exclusively (the parent's
/// shared lock converted), recycled it (a new generation: the parent's descriptor refused
/// as stale) and unlocked it, then waited forever for a reaper thread it does not have. Now
/// the parent's segment, folder and descriptor survive whatever the child drops.
#[test]
fn a_forked_child_dropping_its_pool_leaves_the_parents_segments_alone() {
    for kind in [SegmentKind::File, SegmentKind::Memfd] {
        let root = Scratch::new();
        let pool = Pool::with_config(
            PoolConfig::default()
                .temp_folder(&root.p)
                .kind(kind)
                .sweep_on_start(false),
        )
        .unwrap();
        let mut a = pool.alloc::<u64>(&[1 << 12], Order::C).unwrap();
        let values: Vec<u64> = (0..1 << 12).collect();
        a.volatile_view_mut()
            .unwrap()
            .copy_from_slice(&values)
            .unwrap();
        let a = a.freeze().unwrap();
        let desc = a.descriptor().clone();
        let folders = pool.folders();
        // SAFETY: the child only drops the pool's values and leaves with _exit (no
        // destructor of the test harness, no return into it).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                drop(a);
                drop(pool);
            }));
            // SAFETY: leaving the forked child without running anything of the parent's.
            unsafe { libc::_exit(if done.is_ok() { 0 } else { 1 }) };
        }
        let status = wait_for(pid, Duration::from_secs(10));
        println!("{kind:?}: child exit status {status:?}");
        for f in &folders {
            assert!(
                f.exists(),
                "{kind:?}: the child removed the pool folder {}",
                f.display()
            );
        }
        let fd = (kind == SegmentKind::Memfd).then(|| a.fd_for_peer().unwrap());
        let m = OpenOptions::new()
            .allow_root(&root.p)
            .open((&desc, fd))
            .unwrap_or_else(|e| panic!("{kind:?}: the parent's descriptor after the child: {e}"));
        let got = m.copy_array().unwrap();
        assert_eq!(got.bytes().len(), 8 << 12);
        assert!(
            got.bytes()
                .chunks(8)
                .enumerate()
                .all(|(i, c)| c == (i as u64).to_ne_bytes()),
            "{kind:?}: the segment's bytes changed"
        );
        assert_eq!(
            status,
            Some(0),
            "{kind:?}: the child hung or failed dropping its pool"
        );
        drop(m);
        drop(a);
        drop(pool);
        for f in &folders {
            assert!(
                !f.exists(),
                "{kind:?}: the parent's own drop leaves its folder"
            );
        }
    }
}

/// A process of the same user that takes `LOCK_EX` on every new `stridemap-*` folder of
/// `root` as soon as inotify shows it, and holds it until [`Locker::stop`]. Counts its wins.
struct Locker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    won: std::sync::Arc<std::sync::atomic::AtomicU32>,
    root: std::path::PathBuf,
    thread: std::thread::JoinHandle<u32>,
}

impl Locker {
    fn start(root: &std::path::Path) -> Locker {
        use rustix::fs::inotify;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let won = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let ino = inotify::init(inotify::CreateFlags::CLOEXEC).unwrap();
        inotify::add_watch(&ino, root, inotify::WatchFlags::CREATE).unwrap();
        let dir = rustix::fs::open(
            root,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let thread = {
            let stop = stop.clone();
            let won = won.clone();
            std::thread::spawn(move || {
                let (mut held, mut wins) = (Vec::new(), 0u32);
                let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
                let mut events = inotify::Reader::new(&ino, &mut buf);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(ev) = events.next() else { continue };
                    let Some(name) = ev.file_name().map(|n| n.to_owned()) else {
                        continue;
                    };
                    if !name.to_bytes().starts_with(b"stridemap-") {
                        continue;
                    }
                    let Ok(fd) = rustix::fs::openat(
                        &dir,
                        name.as_c_str(),
                        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
                        rustix::fs::Mode::empty(),
                    ) else {
                        continue;
                    };
                    if rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                        .is_ok()
                    {
                        wins += 1;
                        won.store(wins, std::sync::atomic::Ordering::Relaxed);
                        held.push(fd);
                    }
                }
                wins
            })
        };
        Locker {
            stop,
            won,
            root: root.to_path_buf(),
            thread,
        }
    }

    /// How many folders it has locked first so far.
    fn wins(&self) -> u32 {
        self.won.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops it (a folder made to wake it up) and says how many folders it locked first.
    fn stop(self) -> u32 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let wake = self.root.join("wake");
        std::fs::create_dir(&wake).unwrap();
        let wins = self.thread.join().unwrap();
        std::fs::remove_dir(&wake).unwrap();
        wins
    }
}

/// Issue 19 item 7: a process of the same user that locks every new pool folder exclusively
/// first (inotify) made the pool's blocking `flock(LOCK_SH)` wait forever (`stridemap demo
/// --kind file` hung). The wait is bounded now, and a folder that stays locked is removed
/// and another tried, then an error: each of 24 or more pool creations ends within 10 s, and nothing
/// is left in the root.
#[test]
fn a_locker_of_new_pool_folders_makes_no_hang_and_leaves_nothing() {
    let root = Scratch::new();
    let locker = Locker::start(&root.p);
    let (mut made, mut refused) = (0, 0);
    // 24 creations, and more (up to 400) until the locker has won a race at least once: on a
    // busy machine its thread may lose the first 24 (then nothing would have been shown).
    for round in 0..400 {
        if round >= 24 && locker.wins() > 0 {
            break;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = root.p.clone();
        std::thread::spawn(move || {
            let got = Pool::with_config(
                PoolConfig::default()
                    .temp_folder(&dir)
                    .kind(SegmentKind::File)
                    .sweep_on_start(false),
            )
            .and_then(|pool| pool.alloc::<u8>(&[4096], Order::C).map(drop));
            let _ = tx.send(got.map_err(|e| e.to_string()));
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => made += 1,
            Ok(Err(e)) => {
                println!("refused: {e}");
                assert!(e.contains("stayed locked"), "{e}");
                refused += 1;
            }
            Err(_) => panic!("making a pool folder hung (10 s) against the locker"),
        }
    }
    let wins = locker.stop();
    let left: Vec<_> = std::fs::read_dir(&root.p)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    println!("{made} pools made, {refused} refused; the locker locked {wins} folders first");
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(wins > 0, "the locker never won a race: nothing was shown");
}
