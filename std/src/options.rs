//! What a consumer allows: the folders descriptors may point into, the mode it wants, and
//! whether unsealed fds are acceptable.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::fs::OFlags;

use stridemap_core::Mode;

/// The environment variable naming the folder stridemap's segments live in (and are
/// accepted from), like joblib's `JOBLIB_TEMP_FOLDER`.
pub const TEMP_FOLDER_ENV: &str = "STRIDEMAP_TEMP_FOLDER";

/// Segment folders are named `stridemap-<pid>-<start time>-<uuid>` under a temp base.
pub const SEGMENT_FOLDER_PREFIX: &str = "stridemap-";

/// The folders under which stridemap segment folders are created, in order of preference:
/// `$STRIDEMAP_TEMP_FOLDER` if set, `/dev/shm`, `$TMPDIR` if set (else `/tmp`); only
/// absolute ones. These are the *bases* of the default roots (SPEC.md §6).
///
/// ```
/// let bases = stridemap::__producer_policy::segment_bases();
/// assert!(bases.iter().all(|b| b.is_absolute()));
/// ```
pub fn segment_bases() -> Vec<PathBuf> {
    let set = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let mut bases = Vec::new();
    if let Some(dir) = set(TEMP_FOLDER_ENV) {
        bases.push(PathBuf::from(dir));
    }
    bases.push(PathBuf::from("/dev/shm"));
    bases.push(set("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from));
    bases.retain(|b| b.is_absolute());
    bases
}

/// A folder descriptors may point into.
#[derive(Clone, Debug)]
pub(crate) struct Root {
    /// Canonical (symlink-free) absolute path.
    pub(crate) dir: PathBuf,
    /// The path as the consumer gave it (its components may be symbolic links: a root's own
    /// components are trusted, SPEC.md §6 O2/O3). Paths below either spelling are below it.
    pub(crate) given: PathBuf,
    /// When set, this is a *default root* (SPEC.md §6): the first component below `dir` must
    /// start with it and be a folder owned by this process's effective uid with mode 0700
    /// (stridemap's own segment folders inside a shared temp folder).
    pub(crate) prefix: Option<&'static str>,
    /// The folder opened once (`O_PATH`), shared by clones of the options: opening it again
    /// for every descriptor would double the cost of an open.
    handle: Arc<Mutex<Option<Arc<OwnedFd>>>>,
}

impl Root {
    pub(crate) fn new(dir: &Path, prefix: Option<&'static str>) -> Root {
        // Canonicalize once: the roots are the consumer's own trusted configuration, and
        // resolving their symlinks (e.g. /tmp → /private/tmp) here lets paths below them be
        // checked without following any link.
        let given = dir.to_path_buf();
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        Root {
            dir,
            given,
            prefix,
            handle: Arc::default(),
        }
    }

    /// The folder's fd: the cached one, or (when `fresh`, or none is cached) a new one that
    /// replaces it — for a root folder that was removed and made again.
    pub(crate) fn handle(&self, fresh: bool) -> rustix::io::Result<(Arc<OwnedFd>, bool)> {
        let mut cached = self.handle.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(fd), false) = (cached.as_ref(), fresh) {
            return Ok((fd.clone(), true));
        }
        let fd = Arc::new(rustix::fs::open(
            &self.dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?);
        *cached = Some(fd.clone());
        Ok((fd, false))
    }

    /// The path below this root, if `path` is inside it (lexically, below the root as given
    /// or as resolved; `path` is normalized).
    pub(crate) fn relative<'p>(&self, path: &'p Path) -> Option<&'p Path> {
        let rel = path
            .strip_prefix(&self.dir)
            .or_else(|_| path.strip_prefix(&self.given))
            .ok()?;
        let first = rel.components().next()?;
        match self.prefix {
            Some(p) if !first.as_os_str().to_string_lossy().starts_with(p) => None,
            _ => Some(rel),
        }
    }

    /// How it reads in messages.
    pub(crate) fn display(&self) -> PathBuf {
        match self.prefix {
            Some(p) => self.dir.join(format!("{p}*")),
            None => self.dir.clone(),
        }
    }
}

/// How a consumer opens descriptors: which folders they may name, which mode it wants, and
/// what it accepts from fd-passing peers.
///
/// The default allows only this user's own stridemap segment folders — the *default roots*
/// of SPEC.md §6: an entry `stridemap-*` directly under one of the temp bases
/// (`$STRIDEMAP_TEMP_FOLDER`, `/dev/shm`, `$TMPDIR` or `/tmp`) that is a folder owned by this
/// process's effective uid with mode 0700, checked on the opened folder — read-only, and
/// requires fd-passed files to be sealed against shrinking. A consumer that expects another
/// user's producer adds that producer's folder with [`OpenOptions::allow_root`].
///
/// ```
/// use stridemap::OpenOptions;
/// use stridemap::Mode;
/// let opts = OpenOptions::new().allow_root("/data/arrays").mode(Mode::ReadWrite);
/// assert_eq!(opts.wanted_mode(), Mode::ReadWrite);
/// ```
#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub(crate) roots: Vec<Root>,
    pub(crate) mode: Mode,
    pub(crate) require_seals: bool,
    pub(crate) reuse: bool,
    pub(crate) use_openat2: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// stridemap's segment folders only, mode `r`, sealed fds only, mappings reused.
    pub fn new() -> OpenOptions {
        OpenOptions {
            roots: segment_bases()
                .iter()
                .map(|b| Root::new(b, Some(SEGMENT_FOLDER_PREFIX)))
                .collect(),
            mode: Mode::ReadOnly,
            require_seals: true,
            reuse: true,
            use_openat2: true,
        }
    }

    /// Also allow any file below `dir`.
    pub fn allow_root(mut self, dir: impl AsRef<Path>) -> OpenOptions {
        self.roots.push(Root::new(dir.as_ref(), None));
        self
    }

    /// Allow only files below these folders (replacing the defaults).
    pub fn only_roots<P: AsRef<Path>>(mut self, dirs: impl IntoIterator<Item = P>) -> OpenOptions {
        self.roots = dirs
            .into_iter()
            .map(|d| Root::new(d.as_ref(), None))
            .collect();
        self
    }

    /// The mode to map with: `r` (default), `r+` (needs an `r+` descriptor) or `c`.
    pub fn mode(mut self, mode: Mode) -> OpenOptions {
        self.mode = mode;
        self
    }

    /// Accept fd-passed files that are not sealed against shrinking (only for trusted
    /// producers: a peer that shrinks the file makes this process fault on access).
    pub fn allow_unsealed_fds(mut self, allow: bool) -> OpenOptions {
        self.require_seals = !allow;
        self
    }

    /// Reuse read-only mappings of the same file region across opens (default on).
    pub fn reuse_mappings(mut self, reuse: bool) -> OpenOptions {
        self.reuse = reuse;
        self
    }

    /// The mode asked for.
    pub fn wanted_mode(&self) -> Mode {
        self.mode
    }

    /// The allowed roots, as they read in error messages.
    pub fn roots(&self) -> Vec<PathBuf> {
        self.roots.iter().map(Root::display).collect()
    }

    /// Whether `other` allows exactly the same paths (same roots, same kinds): a mapping
    /// opened by path under one may serve the same path under the other (SPEC.md §6).
    pub(crate) fn same_policy(&self, other: &[(PathBuf, PathBuf, Option<&'static str>)]) -> bool {
        self.policy() == other
    }

    /// The roots as plain data, for [`OpenOptions::same_policy`].
    pub(crate) fn policy(&self) -> Vec<(PathBuf, PathBuf, Option<&'static str>)> {
        self.roots
            .iter()
            .map(|r| (r.dir.clone(), r.given.clone(), r.prefix))
            .collect()
    }

    /// Resolve paths with a walk of `O_NOFOLLOW` opens instead of `openat2` (what happens
    /// on kernels without `openat2`); for tests.
    #[doc(hidden)]
    pub fn without_openat2(mut self) -> OpenOptions {
        self.use_openat2 = false;
        self
    }
}
