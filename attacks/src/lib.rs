//! Helpers shared by the attacks (`tests/`): the `stridemap` binary, planted folders and
//! hand-made descriptors.
//!
//! Every attack here was run against the code before the trust-model fixes (issue 10) and
//! failed there; it passes now. Each says in its output which variant it ran when the machine
//! decides (namespaces, mounts).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A pool-folder name whose pid (1) and start time (0) are nobody's.
pub const ORPHAN: &str = "stridemap-1-0-0123456789abcdef0123456789abcdef";

/// The `stridemap` binary of this build (`cargo build -p stridemap-cli` makes it; the
/// `attacks` step of scripts/test.sh does).
pub fn cli() -> Command {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("stridemap"))
        .expect("target/<profile>/stridemap");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p stridemap-cli` first (scripts/test.sh attacks does)",
        bin.display()
    );
    let mut c = Command::new(bin);
    c.env("RUST_LOG", "warn");
    c
}

/// Runs `cmd`, killing it after `limit`: `None` if it had to be killed.
pub fn run_for(cmd: &mut Command, limit: Duration) -> Option<Output> {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// stdout and stderr of `o`.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh folder (canonical path), removed on drop.
#[derive(Debug)]
pub struct Scratch {
    _t: tempfile::TempDir,
    /// Its canonical path.
    pub p: PathBuf,
}

impl Scratch {
    /// A new one in the system temp folder.
    pub fn new() -> Scratch {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().canonicalize().expect("canonical");
        Scratch { _t: t, p }
    }

    /// `name` inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.p.join(name)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// Whether the machine lets this test use `what` ("mount", "unshare"): `probe` says if it
/// works, and `$STRIDEMAP_ATTACKS_WITHOUT` (a comma-separated list) pretends it does not, to
/// run the fallback variants on a machine that has everything.
pub fn can(what: &str, probe: impl FnOnce() -> bool) -> bool {
    let without = std::env::var("STRIDEMAP_ATTACKS_WITHOUT").unwrap_or_default();
    !without.split(',').any(|w| w == what) && probe()
}

/// A tmpfs of `size` (mount's `size=`, e.g. `64m`) mounted on the existing folder `dir`
/// where mounts work (root, and not `$STRIDEMAP_ATTACKS_WITHOUT=mount`); unmounted when the
/// guard drops, whatever the test did. `None` where it cannot be mounted.
pub fn small_tmpfs(dir: &Path, size: &str) -> Option<Unmount> {
    let mounted = is_root()
        && can("mount", || {
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success())
        });
    mounted.then(|| Unmount(dir.to_path_buf()))
}

/// Unmounts its folder on drop ([`small_tmpfs`]).
#[derive(Debug)]
pub struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Whether this process runs as root (some plants need it: chown, mounts).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Writes the fixed record of a plain `|u1` view of all of `file` (path source, identity
/// recorded) to `out`.
pub fn describe_bytes(file: &Path, out: &Path) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(file).expect("stat");
    let d = stridemap_core::Builder::new(
        stridemap_core::DType::parse("|u1").expect("dtype"),
        &[meta.len()],
    )
    .buffer(0, meta.len())
    .file_len(meta.len())
    .identity(meta.dev(), meta.ino())
    .path(file.to_str().expect("utf-8"))
    .build()
    .expect("valid");
    std::fs::write(out, d.to_bytes()).expect("write");
}

/// The repository's Python (`$STRIDEMAP_PYTHON`, else `.venv/bin/python`).
pub fn python() -> PathBuf {
    std::env::var_os("STRIDEMAP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}
