//! The pool: allocates segments in place or shares existing data once, reuses the segment of
//! an `Arc` it already shared, recycles segments nobody maps any more, and cleans up after
//! itself (and after dead producers).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use stridemap::{ByteView, DType, Element, Layout, Order};
use stridemap_core::SEGMENT_DATA_OFFSET;

use crate::array::{Lease, OutputArray, SharedArray, SharedArrayMut};
use crate::huge::{HugePages, Plan};
use crate::segment::{Fill, Segment};
use crate::source::ShareSource;
use crate::temp::{PoolFolder, choose_root, create_pool_folder};
use crate::{Error, Result, sweep};

/// Which kind of segment a pool makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SegmentKind {
    /// A file in the pool's folder: any process and any language opens it by path. Never
    /// frozen (root writes 0400 files), so read through volatile views; and a process of this
    /// user (or root) that truncates it makes the next access to the lost pages crash with
    /// `SIGBUS`, on the producer's side (its fill, its volatile views) as on consumers'.
    #[default]
    File,
    /// A memfd sealed against shrinking, passed to consumers as an fd over a Unix socket: it
    /// cannot leak and cannot be truncated under a reader (Linux).
    Memfd,
}

/// How a [`Pool`] behaves. The defaults follow joblib where it has one.
///
/// Every field has a setter of the same name.
///
/// ```
/// use stridemap_shm::{PoolConfig, SegmentKind};
/// let cfg = PoolConfig::default().kind(SegmentKind::Memfd).max_nbytes(4 << 20).recycle_max_bytes(0);
/// assert_eq!((cfg.max_nbytes, cfg.recycle_max_bytes), (4 << 20, 0));
/// ```
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Where segment folders go; `None` follows the temp-root policy
    /// (`$STRIDEMAP_TEMP_FOLDER`, then `/dev/shm` when it has room, then the system temp dir).
    pub temp_folder: Option<PathBuf>,
    /// Named files or memfds.
    pub kind: SegmentKind,
    /// Arrays of at most this many bytes travel inline in [`Pool::message`] (joblib: 1 MiB).
    pub max_nbytes: u64,
    /// Most bytes of segments kept for reuse once nobody maps them; 0 turns recycling off.
    pub recycle_max_bytes: u64,
    /// Most segments kept for reuse.
    pub recycle_max_segments: usize,
    /// A cap on the bytes this pool's segments may hold in all (a quota where the
    /// filesystem has none).
    pub quota: Option<u64>,
    /// Prefault every new segment (`MAP_POPULATE`, one thread) so that filling it does not
    /// fault page by page. Without it, new segments of 16 MiB or more made to be filled in
    /// place ([`Pool::alloc`]) are prefaulted anyway, by two threads from both ends where the
    /// process may use two CPUs (`MADV_POPULATE_WRITE`, Linux 5.14; a hint).
    pub prewarm: bool,
    /// Sweep orphaned folders of dead producers when the pool starts.
    pub sweep_on_start: bool,
    /// Huge pages for new segments (see [`HugePages`] and the [`huge_probe`](crate::huge_probe)
    /// table of mechanisms); [`HugePages::Auto`] by default.
    pub huge_pages: HugePages,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            temp_folder: None,
            kind: SegmentKind::File,
            max_nbytes: 1 << 20,
            recycle_max_bytes: 4 << 30,
            recycle_max_segments: 16,
            quota: None,
            prewarm: false,
            sweep_on_start: true,
            huge_pages: HugePages::Auto,
        }
    }
}

impl PoolConfig {
    /// Segments go below `dir` (overrides the policy and the environment).
    pub fn temp_folder(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_folder = Some(dir.into());
        self
    }

    /// Named files or memfds.
    pub fn kind(mut self, kind: SegmentKind) -> Self {
        self.kind = kind;
        self
    }

    /// The inline threshold of [`Pool::message`].
    pub fn max_nbytes(mut self, n: u64) -> Self {
        self.max_nbytes = n;
        self
    }

    /// The recycling cap in bytes (0: off).
    pub fn recycle_max_bytes(mut self, n: u64) -> Self {
        self.recycle_max_bytes = n;
        self
    }

    /// The most segments kept for reuse.
    pub fn recycle_max_segments(mut self, n: usize) -> Self {
        self.recycle_max_segments = n;
        self
    }

    /// A quota on the bytes this pool's segments hold (`None`: none).
    pub fn quota(mut self, bytes: impl Into<Option<u64>>) -> Self {
        self.quota = bytes.into();
        self
    }

    /// Prefault new segments.
    pub fn prewarm(mut self, on: bool) -> Self {
        self.prewarm = on;
        self
    }

    /// Sweep orphans at start (default on).
    pub fn sweep_on_start(mut self, on: bool) -> Self {
        self.sweep_on_start = on;
        self
    }

    /// Huge pages for new segments: [`HugePages::Auto`] (the default), `Never` or `Require`.
    ///
    /// ```
    /// use stridemap_shm::{HugePages, PoolConfig};
    /// let cfg = PoolConfig::default().huge_pages(HugePages::Never);
    /// assert_eq!(cfg.huge_pages, HugePages::Never);
    /// ```
    pub fn huge_pages(mut self, mode: HugePages) -> Self {
        self.huge_pages = mode;
        self
    }
}

/// What a [`Pool`] holds ([`Pool::stats`]).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Segments nobody maps, kept for reuse.
    pub free: usize,
    /// Segments the producer released that a reader still maps.
    pub pending: usize,
    /// Bytes of every segment the pool holds (in use, pending, free): what the quota counts.
    pub held_bytes: u64,
}

/// A producer's segments and their lifecycle.
///
/// Dropping the pool removes its folders (readers that already map a segment keep reading: an
/// unlinked file stays readable through an existing map). In a child `fork`ed from the
/// process that made it, a pool and its arrays recycle, unlock and remove nothing: dropping
/// them there only closes the child's fds, and the parent's segments live on.
///
/// ```no_run
/// use stridemap_shm::{Order, Pool};
/// let pool = Pool::new()?;
/// let mut out = pool.alloc::<f64>(&[1000, 1000], Order::C)?;
/// out.volatile_view_mut()?.fill(1.0);          // filled in place: no copy
/// let frozen = out.freeze()?;                 // read-only from now on
/// let wire = frozen.descriptor().to_bytes();  // send this; consumers map the same pages
/// # Ok::<(), stridemap_shm::Error>(())
/// ```
#[derive(Debug)]
pub struct Pool {
    inner: Arc<PoolInner>,
    reaper: Option<JoinHandle<()>>,
}

#[derive(Debug)]
pub(crate) struct PoolInner {
    config: PoolConfig,
    state: Mutex<State>,
    wake: Condvar,
    /// The process that made the pool. A child `fork`ed from it shares the open file
    /// descriptions of its segments and folders, and so their `flock` locks: a child that
    /// took them exclusively, recycled, unlocked or unlinked would do it to its parent's live
    /// segments. In another process the pool only closes its fds ([`PoolInner::forked`]).
    pid: u32,
}

#[derive(Debug, Default)]
struct State {
    /// This pool's folder under each temp root it used, open and locked (SPEC.md §7).
    folders: Vec<Arc<PoolFolder>>,
    /// Segments nobody maps, kept for reuse, generation already advanced.
    free: Vec<Segment>,
    /// Segments released by the producer but still mapped by a reader.
    pending: Vec<Segment>,
    /// Bytes of every segment this pool holds (live, pending, free), for the quota.
    held: u64,
    /// Arrays shared from an `Arc`, by the `Arc`'s address.
    identity: HashMap<usize, Identity>,
    /// The capacity of the free segment the reaper is prefaulting (out of `free` meanwhile).
    populating: Option<u64>,
    closed: bool,
}

/// An `Arc` the pool shared, and its segment: valid while the `Arc` lives.
struct Identity {
    alive: Box<dyn Fn() -> bool + Send>,
    shared: SharedArray,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("alive", &(self.alive)())
            .finish_non_exhaustive()
    }
}

/// Segment capacities come in four sizes per octave (at most 19% slack) from 64 KiB, so that
/// a released segment fits the next request of a similar size.
pub(crate) fn size_class(n: u64) -> u64 {
    let n = n.max(64 << 10);
    let top = 63 - n.leading_zeros(); // 2^top <= n < 2^(top+1)
    let base = 1u64 << top;
    let quarter = (base / 4).max(1);
    for k in 0..=4u64 {
        let c = base + k * quarter;
        if c >= n {
            return c;
        }
    }
    base << 1
}

/// The capacity of a new segment for `n` data bytes: its size class when recycling, rounded
/// up to whole huge pages when the segment will ask for them (so recycled segments of one
/// class fit each other whatever backs them).
fn capacity_for(n: u64, recycling: bool, huge: Option<u64>) -> Result<u64> {
    let c = if recycling { size_class(n) } else { n };
    match huge {
        Some(h) => crate::huge::round_up(c.max(1), h).ok_or(Error::TooLarge { bytes: c }),
        None => Ok(c),
    }
}

/// Removes the entries whose `Arc` died; the caller drops them after unlocking (dropping a
/// handle releases its segment, which takes the state lock).
fn take_dead(identity: &mut HashMap<usize, Identity>) -> Vec<Identity> {
    let dead: Vec<usize> = identity
        .iter()
        .filter(|(_, e)| !(e.alive)())
        .map(|(k, _)| *k)
        .collect();
    dead.into_iter()
        .filter_map(|k| identity.remove(&k))
        .collect()
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    /// A pool with the default configuration (and an orphan sweep).
    ///
    /// # Errors
    /// [`Error::Io`] if the reaper thread cannot start (the orphan sweep only logs its failures).
    pub fn new() -> Result<Pool> {
        Pool::with_config(PoolConfig::default())
    }

    /// A pool with `config`.
    ///
    /// # Errors
    /// [`Error::Io`] if the reaper thread cannot start (the orphan sweep only logs its failures).
    pub fn with_config(config: PoolConfig) -> Result<Pool> {
        if config.sweep_on_start {
            let roots: Vec<PathBuf> = match &config.temp_folder {
                Some(d) => vec![d.clone()],
                None => crate::segment_bases(),
            };
            match sweep::sweep(&roots, false) {
                Ok(r) => {
                    if !r.removed.is_empty() {
                        log::info!("stridemap: swept {} orphaned folder(s)", r.removed.len());
                    }
                    for (path, why) in &r.failed {
                        log::warn!("stridemap: orphan sweep: {}: {why}", path.display());
                    }
                }
                Err(e) => log::warn!("stridemap: orphan sweep failed: {e}"),
            }
        }
        let inner = Arc::new(PoolInner {
            config,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            pid: std::process::id(),
        });
        let weak = Arc::downgrade(&inner);
        let reaper = std::thread::Builder::new()
            .name("stridemap-reaper".into())
            .spawn(move || reaper(weak))
            .map_err(|e| Error::Io {
                context: "starting the reaper thread".into(),
                source: e,
            })?;
        Ok(Pool {
            inner,
            reaper: Some(reaper),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// The folders this pool created so far (one per temp root it used).
    pub fn folders(&self) -> Vec<PathBuf> {
        lock(&self.inner.state)
            .folders
            .iter()
            .map(|f| f.path.clone())
            .collect()
    }

    /// A shared array of `T`s for the producer to fill in place (no copy), zeroed or holding a
    /// recycled segment's old bytes; [`SharedArrayMut::freeze`] then shares it frozen, or
    /// [`SharedArrayMut::publish`] unfrozen. Consumers never write it (use
    /// [`Pool::alloc_output`] for that), so a recycled memfd that was published before
    /// (sealed `F_SEAL_FUTURE_WRITE`: no consumer can write it) can serve it; a frozen one is
    /// never recycled.
    ///
    /// # Errors
    /// [`Error::NoSpace`] (checked before anything is written), [`Error::TooManyFiles`],
    /// [`Error::PoolClosed`], and a shape error for a shape that does not fit.
    pub fn alloc<T: Element>(&self, shape: &[usize], order: Order) -> Result<SharedArrayMut<T>> {
        self.alloc_dtype(T::dtype()?, shape, order)?.typed()
    }

    /// A shared array that consumers write in place (`r+`: workers filling an output array),
    /// through [`OutputArray::descriptor`] or [`OutputArray::send`]. It is never a sealed
    /// segment.
    ///
    /// # Errors
    /// As [`Pool::alloc`].
    pub fn alloc_output<T: Element>(
        &self,
        shape: &[usize],
        order: Order,
    ) -> Result<OutputArray<T>> {
        self.alloc_output_dtype(T::dtype()?, shape, order)?.typed()
    }

    /// [`Pool::alloc`] for any dtype (big-endian, `V` records, …).
    ///
    /// # Errors
    /// As [`Pool::alloc`].
    pub fn alloc_dtype(
        &self,
        dtype: DType,
        shape: &[usize],
        order: Order,
    ) -> Result<SharedArrayMut> {
        let (lease, layout) = self.lease(dtype, shape, order, false)?;
        Ok(SharedArrayMut::new(lease, dtype, layout))
    }

    /// [`Pool::alloc_output`] for any dtype.
    ///
    /// # Errors
    /// As [`Pool::alloc`].
    pub fn alloc_output_dtype(
        &self,
        dtype: DType,
        shape: &[usize],
        order: Order,
    ) -> Result<OutputArray> {
        let (lease, layout) = self.lease(dtype, shape, order, true)?;
        Ok(OutputArray::new(lease, dtype, layout))
    }

    fn lease(
        &self,
        dtype: DType,
        shape: &[usize],
        order: Order,
        for_consumers: bool,
    ) -> Result<(Lease, Layout)> {
        // Lengths in memory are usize, a layout's the wire's u64: the same on the 64-bit
        // targets this crate builds for, and a length that did not fit would make the layout
        // too large, an error.
        let shape: Vec<u64> = shape
            .iter()
            .map(|&n| u64::try_from(n).unwrap_or(u64::MAX))
            .collect();
        let layout = Layout::contiguous(dtype.itemsize(), &shape, order)?;
        let n = layout.nbytes();
        let (seg, _) = self.inner.obtain(n, for_consumers, Fill::Reserve(n))?;
        Ok((Lease::new(seg, Arc::downgrade(&self.inner)), layout))
    }

    /// Writes the elements of `view` once into a new (or recycled) segment, packed in C order,
    /// and returns it frozen (read-only). Use [`Pool::share_arc`] to share the same data again
    /// without writing it again.
    ///
    /// # Errors
    /// As [`Pool::alloc`].
    pub fn share(&self, view: &ByteView<'_>) -> Result<SharedArray> {
        self.write_once(view)?.freeze()
    }

    /// Writes the elements of `view` into a new or recycled segment, as [`Pool::share`], and
    /// returns it [published](SharedArrayMut::publish) rather than frozen: read-only for
    /// consumers, read through [`VolatileView`](stridemap::VolatileView)s, and recycled once
    /// nobody maps it. The fast path of a producer that streams new data every step.
    ///
    /// ```
    /// use stridemap_shm::{ByteView, DType, Layout, Order, Pool, PoolConfig, SegmentKind};
    /// let pool = Pool::with_config(PoolConfig::default().kind(SegmentKind::Memfd))?;
    /// let step = [0.5f64; 4];
    /// let layout = Layout::contiguous(8, &[4], Order::C)?;
    /// let v = ByteView::new(bytemuck::cast_slice(&step), layout, DType::parse("<f8")?)?;
    /// let a = pool.publish(&v)?;
    /// assert_eq!(a.typed::<f64>()?.volatile_view()?.to_vec(), step);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Pool::alloc`].
    pub fn publish(&self, view: &ByteView<'_>) -> Result<SharedArray> {
        self.write_once(view)?.publish()
    }

    /// `view`'s elements, packed in C order, in a segment only this process holds.
    fn write_once(&self, view: &ByteView<'_>) -> Result<SharedArrayMut> {
        let n = view.layout().nbytes();
        let contiguous = view.layout().is_c_contiguous();
        let span = view.layout().span();
        let packed = contiguous
            .then(|| view.buffer().get(span.start as usize..span.end as usize))
            .flatten();
        let fill = match packed {
            Some(bytes) => Fill::Write(bytes),
            None => Fill::Reserve(n),
        };
        let (mut seg, recycled) = self.inner.obtain(n, false, fill)?;
        if recycled || packed.is_none() {
            seg.write_elements(view);
        }
        let layout = Layout::contiguous(view.dtype().itemsize(), view.layout().shape(), Order::C)?;
        let lease = Lease::new(seg, Arc::downgrade(&self.inner));
        Ok(SharedArrayMut::new(lease, view.dtype(), layout))
    }

    /// Shares the array behind `source`, reusing the segment of an earlier call for the same
    /// `Arc` (the same allocation, still alive) instead of writing it again. The key is the
    /// `Arc`'s identity and liveness, never its content, so two equal arrays are two segments
    /// and a new array at a recycled address is not mistaken for the old one.
    ///
    /// # Errors
    /// As [`Pool::alloc`], and those of [`ShareSource::byte_view`].
    pub fn share_arc<A: ShareSource + ?Sized>(&self, source: &Arc<A>) -> Result<SharedArray> {
        let key = Arc::as_ptr(source).cast::<()>() as usize;
        let dead = {
            let mut st = lock(&self.inner.state);
            let dead = take_dead(&mut st.identity);
            if let Some(e) = st.identity.get(&key) {
                log::debug!("stridemap: reusing the segment of an already shared Arc");
                return Ok(e.shared.clone());
            }
            dead
        };
        // Released outside the lock: dropping a handle gives its segment back to the pool.
        drop(dead);
        let shared = self.share(&source.byte_view()?)?;
        let weak = Arc::downgrade(source);
        let replaced = lock(&self.inner.state).identity.insert(
            key,
            Identity {
                alive: Box::new(move || weak.strong_count() > 0),
                shared: shared.clone(),
            },
        );
        drop(replaced);
        Ok(shared)
    }

    /// The message for `view`: inline below [`PoolConfig::max_nbytes`], else shared.
    ///
    /// # Errors
    /// As [`Pool::share`], for arrays above the threshold.
    pub fn message(&self, view: &ByteView<'_>) -> Result<crate::Outgoing> {
        crate::message::outgoing(self, view)
    }

    /// Tries again, now, to delete or recycle released segments that a reader still mapped.
    pub fn collect(&self) {
        self.inner.collect_pending();
    }

    /// What the pool holds now: for tests and monitoring.
    pub fn stats(&self) -> PoolStats {
        let st = lock(&self.inner.state);
        PoolStats {
            free: st.free.len(),
            pending: st.pending.len(),
            held_bytes: st.held,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.inner.forked() {
            // The reaper thread was not copied into this child (joining it would wait
            // forever), and the state's lock may have been held by a thread that was not
            // either: touch neither. Its segments are the parent's (`PoolInner::drop`).
            std::mem::forget(self.reaper.take());
            return;
        }
        lock(&self.inner.state).closed = true;
        self.inner.wake.notify_all();
        if let Some(r) = self.reaper.take() {
            let _ = r.join();
        }
        // The last strong reference may be here or in a release in flight; cleanup runs in
        // `PoolInner::drop` either way.
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        if self.forked() {
            // A forked child: its fds close as the state drops; the parent's segments, locks
            // and folders stay as they are.
            return;
        }
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        st.identity.clear();
        for seg in st.free.drain(..).chain(st.pending.drain(..)) {
            seg.unlink();
        }
        for folder in st.folders.drain(..) {
            folder.remove();
        }
    }
}

impl PoolInner {
    /// Whether this is a child `fork`ed from the process that made the pool: then the pool
    /// recycles, unlocks and removes nothing, and dropping it only closes its fds.
    fn forked(&self) -> bool {
        std::process::id() != self.pid
    }

    /// A segment with room for `n` data bytes, locked shared, and whether it was recycled: a
    /// recycled one of the right size class if there is one (for a `writable` array, one
    /// consumers may still write), else a new one filled as `fill` says.
    fn obtain(&self, n: u64, writable: bool, fill: Fill<'_>) -> Result<(Segment, bool)> {
        let recycling = self.config.recycle_max_bytes > 0;
        // A hugetlbfs temp root holds huge pages only, whatever the mode.
        let huge = self.hugetlbfs_root().or_else(|| {
            crate::huge::page_size_for(
                self.config.huge_pages,
                n,
                self.config.kind,
                self.config.temp_folder.as_deref(),
            )
        });
        let capacity = capacity_for(n, recycling, huge)?;
        if recycling {
            let found = {
                let mut st = lock(&self.state);
                loop {
                    if st.closed {
                        return Err(Error::PoolClosed);
                    }
                    let at = st.free.iter().position(|s| {
                        // A published memfd (F_SEAL_FUTURE_WRITE) cannot be written by
                        // consumers, so it serves no output; a segment once written by
                        // consumers may still be (a kept map or fd), so it serves only
                        // output arrays again.
                        s.capacity == capacity
                            && if writable {
                                !s.sealed
                            } else {
                                !s.lent_writable
                            }
                    });
                    if let Some(i) = at {
                        break Some(st.free.swap_remove(i));
                    }
                    // The reaper is prefaulting a segment of this size: waiting for it is
                    // cheaper than making a new one.
                    if st.populating != Some(capacity) {
                        break None;
                    }
                    st = self
                        .wake
                        .wait_timeout(st, Duration::from_millis(100))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            };
            if let Some(mut seg) = found {
                seg.reserve(n)?;
                seg.lock_shared()?;
                if writable {
                    seg.thaw()?;
                    seg.lent_writable = true;
                }
                log::debug!(
                    "stridemap: reusing segment {} (generation {})",
                    seg.name(),
                    seg.generation
                );
                return Ok((seg, true));
            }
        }
        let seg = self.create(n, capacity, fill, huge)?;
        lock(&self.state).held += seg.file_len();
        let mut seg = seg;
        seg.lent_writable |= writable;
        Ok((seg, false))
    }

    /// A new segment of `capacity` data bytes (`n` used), in huge pages of `huge` bytes when
    /// asked for and available (the first mechanism of [`crate::huge_probe`] that works),
    /// else in base pages, or for [`HugePages::Require`] an error naming what to enable.
    fn create(&self, n: u64, capacity: u64, fill: Fill<'_>, huge: Option<u64>) -> Result<Segment> {
        let offset = huge.unwrap_or(SEGMENT_DATA_OFFSET);
        let needed = offset.saturating_add(n);
        let folder = match self.config.kind {
            SegmentKind::File => Some(self.folder_for(needed)?),
            SegmentKind::Memfd => None,
        };
        let at = folder
            .as_ref()
            .map_or_else(|| PathBuf::from("memfd"), |f| f.path.clone());
        self.check_quota(&at, needed)?;
        let make = |plan: Plan| match &folder {
            Some(f) => Segment::create_file(f, capacity, fill, self.config.prewarm, plan),
            None => Segment::create_memfd(capacity, fill, self.config.prewarm, plan),
        };
        let Some(_) = huge else {
            return make(Plan::BASE);
        };
        let probe = crate::huge_probe(
            self.config.kind,
            folder.as_ref().map(|f| f.path.as_path()),
            capacity,
        );
        let mut failures = Vec::new();
        for c in probe.candidates.iter().filter(|c| c.available) {
            match make(Plan::of(c, &probe)) {
                Ok(seg) => return Ok(seg),
                // Another process took the free hugetlb pages, or a tmpfs is full: the next
                // mechanism may still work.
                Err(
                    e @ (Error::NoSpace { .. }
                    | Error::RanOutOfSpace { .. }
                    | Error::Unsupported { .. }),
                ) => {
                    log::debug!("stridemap: {} failed: {e}; trying the next", c.backing);
                    failures.push(format!("{} failed: {e}", c.backing));
                }
                Err(e) => return Err(e),
            }
        }
        let why = std::iter::once(probe.summary())
            .chain(failures)
            .collect::<Vec<_>>()
            .join("; ");
        if self.config.huge_pages == HugePages::Require {
            return Err(Error::HugePagesUnavailable {
                kind: self.config.kind,
                why,
            });
        }
        if let Some(f) = &folder
            && crate::huge::hugetlbfs_page(&f.path).is_some()
        {
            // Base pages do not exist there.
            log::debug!(
                "stridemap: no room in hugetlbfs {}: {why}",
                f.path.display()
            );
            return Err(Error::NoSpace {
                folder: f.path.clone(),
                needed,
                available: 0,
                limit: None,
            });
        }
        log::debug!("stridemap: a {n}-byte segment gets base pages: {why}");
        make(Plan::BASE)
    }

    /// The page size of the pool's explicit temp root (configured, or
    /// `$STRIDEMAP_TEMP_FOLDER`) when it is a hugetlbfs mount and the pool makes named files.
    fn hugetlbfs_root(&self) -> Option<u64> {
        if self.config.kind != SegmentKind::File {
            return None;
        }
        let root = self.config.temp_folder.clone().or_else(|| {
            std::env::var_os(stridemap::__producer_policy::TEMP_FOLDER_ENV).map(PathBuf::from)
        })?;
        crate::huge::hugetlbfs_page(&root)
    }

    /// This pool's folder under the temp root chosen for a segment of `needed` bytes.
    fn folder_for(&self, needed: u64) -> Result<Arc<PoolFolder>> {
        let root = choose_root(self.config.temp_folder.as_deref(), needed)?;
        let mut st = lock(&self.state);
        if st.closed {
            return Err(Error::PoolClosed);
        }
        if let Some(f) = st.folders.iter().find(|f| f.root == root) {
            return Ok(f.clone());
        }
        let folder = Arc::new(create_pool_folder(&root)?);
        st.folders.push(folder.clone());
        Ok(folder)
    }

    fn check_quota(&self, folder: &Path, needed: u64) -> Result<()> {
        if let Some(quota) = self.config.quota {
            let held = lock(&self.state).held;
            let available = quota.saturating_sub(held);
            if needed > available {
                return Err(Error::NoSpace {
                    folder: folder.to_path_buf(),
                    needed,
                    available,
                    limit: None,
                });
            }
        }
        Ok(())
    }

    /// The producer is done with `seg`: delete or recycle it now if nobody maps it, else
    /// later (SPEC.md §7).
    pub(crate) fn release(&self, seg: Segment) {
        if self.forked() {
            // The parent's segment: close this child's fds, nothing more.
            drop(seg);
            return;
        }
        let mut st = lock(&self.state);
        match seg.try_lock_exclusive() {
            Ok(true) => self.retire(&mut st, seg),
            Ok(false) => {
                log::debug!(
                    "stridemap: segment {} still mapped by a reader; deferring",
                    seg.name()
                );
                st.pending.push(seg);
                self.wake.notify_all();
            }
            Err(e) => {
                log::warn!("stridemap: {e}; deferring segment {}", seg.name());
                st.pending.push(seg);
            }
        }
    }

    /// With the exclusive lock held: recycle `seg` (next generation, onto the free list) if
    /// the caps allow, else delete it.
    fn retire(&self, st: &mut State, mut seg: Segment) {
        let free_bytes: u64 = st.free.iter().map(|s| s.capacity).sum();
        // A frozen memfd is never written again (and one whose freeze failed half-way has
        // no writable map): neither is recycled.
        let keep = !st.closed
            && seg.is_writable()
            && self.config.recycle_max_bytes > 0
            && st.free.len() < self.config.recycle_max_segments
            && free_bytes + seg.capacity <= self.config.recycle_max_bytes;
        if keep {
            seg.clear_spare();
            seg.next_generation();
            seg.unlock();
            seg.populated = false;
            log::debug!(
                "stridemap: recycling segment {} as generation {}",
                seg.name(),
                seg.generation
            );
            st.free.push(seg);
            self.wake.notify_all();
        } else {
            seg.unlink();
            st.held = st.held.saturating_sub(seg.file_len());
        }
    }

    fn collect_pending(&self) {
        let mut st = lock(&self.state);
        let pending = std::mem::take(&mut st.pending);
        for seg in pending {
            match seg.try_lock_exclusive() {
                Ok(true) => self.retire(&mut st, seg),
                _ => st.pending.push(seg),
            }
        }
    }
}

/// Releases a segment whose handles are all gone: to the pool if it still exists, else it
/// is simply dropped (the pool already removed its folder).
pub(crate) fn release(pool: &Weak<PoolInner>, seg: Segment) {
    match pool.upgrade() {
        Some(p) => p.release(seg),
        None => drop(seg),
    }
}

/// The pool's background thread: retries deferred deletions, prefaults segments waiting for
/// reuse, and forgets `Arc`s that died.
fn reaper(pool: Weak<PoolInner>) {
    loop {
        let Some(p) = pool.upgrade() else { return };
        p.collect_pending();
        let job = {
            let mut st = lock(&p.state);
            if st.closed {
                return;
            }
            let dead = take_dead(&mut st.identity);
            let at = st.free.iter().position(|s| !s.populated);
            let job = at.map(|i| st.free.swap_remove(i));
            st.populating = job.as_ref().map(|s| s.capacity);
            (job, dead)
        };
        let (job, dead) = job;
        drop(dead);
        if let Some(mut seg) = job {
            seg.populate();
            let mut st = lock(&p.state);
            st.populating = None;
            if st.closed {
                seg.unlink();
            } else {
                st.free.push(seg);
            }
            p.wake.notify_all();
            continue;
        }
        let st = lock(&p.state);
        if st.closed {
            return;
        }
        let wait = if st.pending.is_empty() {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(20)
        };
        let _unused = p.wake.wait_timeout(st, wait);
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_have_little_slack() {
        assert_eq!(size_class(0), 64 << 10);
        assert_eq!(size_class(64 << 10), 64 << 10);
        assert_eq!(size_class((64 << 10) + 1), 80 << 10);
        assert_eq!(size_class(1 << 30), 1 << 30);
        assert_eq!(size_class((1 << 30) + 1), (1 << 30) + (1 << 28));
        for n in [100_000u64, 1 << 20, 3 << 20, 1_000_000_007, 7 << 30] {
            let c = size_class(n);
            assert!(c >= n && (c - n) * 100 / n <= 25, "{n} -> {c}");
            assert_eq!(size_class(c), c);
        }
    }
}
