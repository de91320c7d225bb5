//! The crate's only `unsafe` code: the producer's map of a segment ([`SegmentMap`]), making a
//! memfd private or frozen for good, prefaulting, and the raw views of segments others may
//! write.
//!
//! # The soundness argument
//!
//! memmap2's contract: no reference to mapped bytes while anyone else can change them. The
//! map is a `memmap2::MmapRaw`, which makes no reference by itself (its `as_ptr`, `len` are
//! inherent; `Mmap`/`MmapMut` reach them through `Deref` to a whole-map slice). References
//! to its bytes are made in three places only, each on the kernel's word, read back on the
//! fd this process holds:
//!
//! - [`SegmentMap::frozen_bytes`]: `&[u8]` of a map that [`SegmentMap::freeze`] made. It
//!   dropped the writable map, sealed the memfd `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW`
//!   (the kernel grants `F_SEAL_WRITE` only when no writable map of the file exists anywhere,
//!   and refuses every writer after), mapped it again read-only and read the seals back on
//!   the fd. Nothing can change those bytes for the rest of the file's life.
//! - [`SegmentMap::private_bytes`] / [`SegmentMap::private_bytes_mut`]: the producer's fill
//!   in place of a *private* memfd, one that [`NewFile::map`] made: a memfd this module
//!   created and whose fd it handed to nobody ([`NewFile`] gives out no `File` and no fd)
//!   until its one writable map existed and the kernel had sealed it `F_SEAL_FUTURE_WRITE |
//!   F_SEAL_SHRINK | F_SEAL_GROW` (read back) and refused a new writable map of it (tried).
//!   From then on nobody, this process included, can write(2) it, map it writable or resize
//!   it: the producer's map stays its only writer, whoever gets its fd later. The one way
//!   around is `/proc/<pid>/fd` during the microseconds between `memfd_create` and the seal,
//!   open to processes allowed to inspect this one, which `/proc/<pid>/mem` gives the same
//!   power over all its memory: outside what Rust can promise.
//! - [`SegmentMap::bytes_mut_unchecked`]: an `unsafe fn`; its caller promises.
//!
//! Named files (root and every process of this user open them for writing) and outputs
//! (consumers write them) are never private. Every other access (outputs, named files,
//! segments shared unfrozen, the header of a recycled segment) is raw:
//! [`VolatileView`]/[`VolatileViewMut`] (one volatile access per element) or a copy to or from
//! memory this process owns, never a reference.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use std::os::unix::fs::FileExt;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{
    FallocateFlags, MemfdFlags, SealFlags, fallocate, fcntl_add_seals, fcntl_get_seals,
    memfd_create,
};
use stridemap::{Element, Layout, ViewError, VolatileView, VolatileViewMut};

/// The producer's map of a whole segment, header included.
#[derive(Debug)]
pub(crate) struct SegmentMap {
    raw: MmapRaw,
    /// `PROT_READ | PROT_WRITE` (else read-only: after [`SegmentMap::freeze`]).
    writable: bool,
    /// Which references the kernel's seals allow.
    lend: Lend,
}

/// The references a [`SegmentMap`] may lend, by what the kernel enforces on its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lend {
    /// None: others may write the file (a named file, an output, an unsealable memfd).
    Never,
    /// The producer's own, `&mut` included: a memfd [`NewFile::map`] sealed
    /// `F_SEAL_FUTURE_WRITE` with this map as its only writable one.
    Private,
    /// Shared (`&[u8]`) only: a memfd [`SegmentMap::freeze`] sealed `F_SEAL_WRITE`.
    Frozen,
}

/// A segment's file before the producer maps it: a named file, or a memfd no fd of which
/// exists anywhere but in this value. It hands out no `File` and no fd, only the operations
/// the producer needs before mapping, so that [`NewFile::map`] can prove a memfd private.
#[derive(Debug)]
pub(crate) struct NewFile {
    file: File,
    /// A memfd made by [`NewFile::memfd`] to be filled by the producer alone.
    private: bool,
}

impl NewFile {
    /// A named file (never private: others may open it by path).
    pub(crate) fn named(file: File) -> NewFile {
        NewFile {
            file,
            private: false,
        }
    }

    /// A new memfd (`memfd_create(name, flags)`); `private` asks [`map`](Self::map) to seal
    /// it for the producer's fill in place (consumers will never write it).
    pub(crate) fn memfd(
        name: &str,
        flags: MemfdFlags,
        private: bool,
    ) -> rustix::io::Result<NewFile> {
        let fd = memfd_create(name, flags)?;
        Ok(NewFile {
            file: File::from(fd),
            private,
        })
    }

    /// `pwrite` all of `buf` at `off`.
    pub(crate) fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.file.write_all_at(buf, off)
    }

    /// `ftruncate`.
    pub(crate) fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    /// `fallocate(0, off, len)`: reserves the space.
    pub(crate) fn fallocate(&self, off: u64, len: u64) -> rustix::io::Result<()> {
        fallocate(&self.file, FallocateFlags::empty(), off, len)
    }

    /// Whether the file is in a tmpfs (its pages are memory).
    pub(crate) fn is_tmpfs(&self) -> bool {
        is_tmpfs(&self.file)
    }

    /// The whole file (`len` bytes), mapped shared and writable (`populate` prefaults it),
    /// and the file. A private memfd is sealed `F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK |
    /// F_SEAL_GROW` once this map exists; its map lends `&mut` for the producer's fill if the
    /// kernel then refuses a new writable map (else, on a kernel that does not enforce the
    /// seal at mmap, it lends nothing: see the module docs).
    pub(crate) fn map(self, len: usize, populate: bool) -> io::Result<(File, SegmentMap)> {
        let mut opts = MmapOptions::new();
        opts.len(len);
        if populate {
            opts.populate();
        }
        // A raw map is safe to make: it lends no reference (module docs).
        let raw = opts.map_raw(&self.file)?;
        let lend = if self.private && seal_private(&self.file, len) {
            Lend::Private
        } else {
            Lend::Never
        };
        let map = SegmentMap {
            raw,
            writable: true,
            lend,
        };
        Ok((self.file, map))
    }
}

/// Whether `file` is in a tmpfs.
pub(crate) fn is_tmpfs(file: &File) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    rustix::fs::fstatfs(file).is_ok_and(|st| st.f_type as u64 == TMPFS_MAGIC)
}

/// Seals the memfd `file` (`len` bytes, mapped writable once) `F_SEAL_FUTURE_WRITE |
/// F_SEAL_SHRINK | F_SEAL_GROW`, reads the seals back on the fd and tries a new writable
/// shared map, which the kernel must refuse (`EPERM`; hugetlbfs ignored the seal at mmap on
/// older kernels). Whether all three held: no writable map can be made from now on.
fn seal_private(file: &File, len: usize) -> bool {
    let seals = SealFlags::FUTURE_WRITE | SealFlags::SHRINK | SealFlags::GROW;
    if fcntl_add_seals(file, seals).is_err() {
        return false;
    }
    if !fcntl_get_seals(file).is_ok_and(|s| s.contains(seals)) {
        return false;
    }
    match MmapOptions::new().len(len).map_raw(file) {
        Ok(_) => {
            log::debug!("stridemap: this kernel maps F_SEAL_FUTURE_WRITE memfds writable");
            false
        }
        Err(e) => e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()),
    }
}

/// Whether `file` is sealed `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW` (read on this fd).
fn sealed_for_good(file: &File) -> bool {
    fcntl_get_seals(file)
        .is_ok_and(|s| s.contains(SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW))
}

impl SegmentMap {
    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    /// The address of the first byte.
    pub(crate) fn addr(&self) -> usize {
        self.raw.as_ptr() as usize
    }

    pub(crate) fn is_frozen(&self) -> bool {
        self.lend == Lend::Frozen
    }

    /// Whether this is a private memfd's writable map (see [`NewFile::map`]).
    pub(crate) fn is_private(&self) -> bool {
        self.lend == Lend::Private && self.writable
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }

    /// Freezes the memfd `file` for good: drops this writable map, seals `F_SEAL_WRITE |
    /// F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, and keeps a read-only map made through
    /// `read_only` (an `O_RDONLY` fd of the same file: a read-only shared map of a
    /// write-sealed memfd through an `O_RDWR` fd fails before Linux 6.7). If the kernel
    /// refuses the seal (`EBUSY`: another writable map exists), the map is made writable
    /// again and the error returned; if even that fails, the map stays read-only and not
    /// frozen (the pool then never recycles the segment). Either way it lends nothing more
    /// than before.
    pub(crate) fn freeze(&mut self, file: &File, read_only: impl AsFd) -> io::Result<()> {
        if self.lend == Lend::Frozen {
            return Ok(());
        }
        let ro = MmapOptions::new()
            .len(self.raw.len())
            .map_raw_read_only(read_only.as_fd().as_raw_fd())?;
        drop(std::mem::replace(&mut self.raw, ro));
        self.writable = false;
        let seals = SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
        if let Err(e) = fcntl_add_seals(file, seals) {
            if let Ok(w) = MmapOptions::new().len(self.raw.len()).map_raw(file) {
                // The new map of a private memfd is made after its seal: it would not be
                // its only writer any more, so it lends nothing from now on.
                self.raw = w;
                self.writable = true;
                self.lend = Lend::Never;
            }
            return Err(e.into());
        }
        self.lend = if sealed_for_good(file) {
            Lend::Frozen
        } else {
            Lend::Never
        };
        Ok(())
    }

    /// The bytes, if frozen.
    pub(crate) fn frozen_bytes(&self) -> Option<&[u8]> {
        if self.lend != Lend::Frozen {
            return None;
        }
        // SAFETY: `Lend::Frozen` is set only by `freeze`, after the kernel sealed the file
        // against writes (granted only with no writable map left, this one included: it was
        // replaced first) and shrinking, read back with F_GET_SEALS. So the `len` mapped
        // bytes stay backed and unchanged while `self` is borrowed (the map lives that
        // long); a read-only map cannot be written through by this process either.
        Some(unsafe { std::slice::from_raw_parts(self.raw.as_ptr(), self.raw.len()) })
    }

    /// The bytes, read-only, of a private memfd (or a frozen one): `None` for any other.
    pub(crate) fn private_bytes(&self) -> Option<&[u8]> {
        if self.lend == Lend::Frozen {
            return self.frozen_bytes();
        }
        if !self.is_private() {
            return None;
        }
        // SAFETY: a live map of `len` readable bytes, borrowed for the slice's life. Only
        // this map writes them: `Lend::Private` is set only by `NewFile::map`, after the
        // kernel sealed the memfd F_SEAL_FUTURE_WRITE|SHRINK|GROW (read back) and refused a
        // new writable map, at a time when this map was the only one (the `NewFile` had given
        // its fd to nobody; see the module docs for /proc). So no process can write(2) it,
        // make a writable map or shrink it, and this process writes this map only through
        // `&mut self`, which the borrow excludes.
        Some(unsafe { std::slice::from_raw_parts(self.raw.as_ptr(), self.raw.len()) })
    }

    /// The bytes, writable, of a private memfd: `None` for any other.
    pub(crate) fn private_bytes_mut(&mut self) -> Option<&mut [u8]> {
        if !self.is_private() {
            return None;
        }
        // SAFETY: as in `private_bytes`, this map is the file's only writer and only process
        // that can write it, forever (the kernel's seals, checked when the map was made); the
        // map is writable (`is_private` checks it) and borrowed mutably for the slice's
        // life, so nothing else in this process reaches it meanwhile.
        Some(unsafe { std::slice::from_raw_parts_mut(self.raw.as_mut_ptr(), self.raw.len()) })
    }

    /// The bytes, writable, whatever the file is; empty once read-only.
    ///
    /// # Safety
    /// While the slice lives, no other process, and no other map or file handle in this
    /// one, writes or truncates the mapped file (memmap2's contract for `MmapMut`).
    pub(crate) unsafe fn bytes_mut_unchecked(&mut self) -> &mut [u8] {
        if !self.writable {
            return &mut [];
        }
        // SAFETY: a live writable map of `len` bytes, borrowed mutably for the slice's life,
        // so nothing else in this process reaches it through this map meanwhile; that nothing
        // outside it writes the file is the caller's promise (`# Safety`).
        unsafe { std::slice::from_raw_parts_mut(self.raw.as_mut_ptr(), self.raw.len()) }
    }

    /// Copies `src` to byte `off` without making a reference to the map (others may map
    /// it); false (nothing written) if it does not fit or the map is read-only.
    pub(crate) fn write_at(&mut self, off: usize, src: &[u8]) -> bool {
        let fits = off
            .checked_add(src.len())
            .is_some_and(|end| end <= self.raw.len());
        if !fits || !self.writable {
            return false;
        }
        // SAFETY: `off + src.len() ≤ len` (checked), inside a live writable map borrowed
        // mutably for the call; `src` is memory of this process no raw access of the map
        // writes, so they do not overlap. No reference to the map's bytes is made.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.raw.as_mut_ptr().add(off), src.len())
        };
        true
    }

    /// `layout` over `map[start..]`, read through raw accesses only.
    pub(crate) fn view_at<T: Element>(
        &self,
        start: usize,
        layout: Layout,
    ) -> stridemap::ViewResult<VolatileView<'_, T>> {
        let start = start.min(self.raw.len());
        let len = self.raw.len() - start;
        // SAFETY: `start ≤ len`, so the pointer stays inside (or one past) the map, and the
        // `len - start` bytes from it are readable while the map lives, which the borrow of
        // `self` ensures. `VolatileView` makes no reference, and this process makes no `&mut`
        // to them meanwhile: that needs `&mut self`, which the borrow excludes.
        unsafe { VolatileView::from_raw_parts(self.raw.as_ptr().add(start), len, layout) }
    }

    /// `layout` over `map[start..]`, written and read through raw accesses only.
    ///
    /// # Errors
    /// [`ViewError::ReadOnly`] once the map is read-only; else as `VolatileViewMut::new`.
    pub(crate) fn view_mut_at<T: Element>(
        &mut self,
        start: usize,
        layout: Layout,
    ) -> stridemap::ViewResult<VolatileViewMut<'_, T>> {
        if !self.writable {
            return Err(ViewError::ReadOnly);
        }
        let start = start.min(self.raw.len());
        let len = self.raw.len() - start;
        // SAFETY: as in `view_at`, the range is inside the live map for the borrow, and it
        // is writable (checked); `self` is borrowed mutably, so nothing else in this process
        // reaches these bytes meanwhile except through the returned view.
        unsafe { VolatileViewMut::from_raw_parts(self.raw.as_mut_ptr().add(start), len, layout) }
    }

    /// `madvise(advice)` over `[start, start + len)`, an advice that never changes contents.
    fn advise(&mut self, start: usize, len: usize, advice: rustix::mm::Advice) -> io::Result<()> {
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.raw.len())
            .ok_or_else(|| io::Error::other("range outside the segment map"))?;
        if start == end {
            return Ok(());
        }
        // SAFETY: `start ≤ end ≤ len` (checked), so `start` stays inside the map.
        let at = unsafe { self.raw.as_mut_ptr().add(start) };
        // SAFETY: `at .. at + (end - start)` lies inside a live mapping borrowed mutably for
        // the call; the advices used (MADV_POPULATE_WRITE/READ, MADV_HUGEPAGE) fault pages
        // in as an access would, or change how later faults allocate: never the contents.
        unsafe { rustix::mm::madvise(at.cast(), end - start, advice) }.map_err(io::Error::from)
    }

    /// Prefaults `map[..len]` for writing (MADV_POPULATE_WRITE, Linux 5.14+), so that the
    /// next fill of a recycled segment runs at memcpy speed. Errors (older kernels) are
    /// ignored: the pages then fault in on first write instead.
    pub(crate) fn populate_write(&mut self, len: usize) {
        if self.writable {
            let len = len.min(self.raw.len());
            let _ = self.advise(0, len, rustix::mm::Advice::LinuxPopulateWrite);
        }
    }

    /// Maps the pages the segment already holds into this map (MADV_POPULATE_READ, Linux
    /// 5.14; a hint, errors ignored): after [`freeze`](Self::freeze) remapped a segment in
    /// huge pages, so that the new map holds them whole before anyone reads.
    pub(crate) fn populate_read(&mut self) {
        let len = self.raw.len();
        let _ = self.advise(0, len, rustix::mm::Advice::LinuxPopulateRead);
    }

    /// Asks for transparent huge pages on the whole map (`MADV_HUGEPAGE`): with
    /// `shmem_enabled` (or a tmpfs `huge=`) set to `advise` the kernel then allocates the
    /// segment's pages 2 MiB at a time when this map faults them; elsewhere it is a hint
    /// that changes nothing. Errors (no THP in this kernel) are returned for the caller to
    /// log.
    pub(crate) fn advise_huge(&mut self) -> io::Result<()> {
        let len = self.raw.len();
        self.advise(0, len, rustix::mm::Advice::LinuxHugepage)
    }

    /// Prefaults `map[start..start + len]` for writing (MADV_POPULATE_WRITE), reporting
    /// failure: how a segment whose huge pages only an advised mapping gets reserves its
    /// space (a full tmpfs is then an error here, not a SIGBUS on a later write).
    pub(crate) fn populate_range(&mut self, start: usize, len: usize) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::other("the segment map is read-only"));
        }
        self.advise(start, len, rustix::mm::Advice::LinuxPopulateWrite)
    }

    /// Prefaults `map[start..start + len]` for writing (MADV_POPULATE_WRITE) from both ends
    /// at once, when this process may run on two CPUs: this thread claims chunks from the
    /// front, a helper thread from the back, until they meet. The kernel's first touch of
    /// each fresh page (allocating and zeroing it, huge pages included, and mapping it) is
    /// then shared by two CPUs, and the producer's fill in place runs at memcpy speed. A
    /// hint, like [`populate_write`](Self::populate_write): each thread stops at its first
    /// failure (an older kernel, memory pressure), and pages not populated fault in on first
    /// write as before. Whether every chunk was populated.
    pub(crate) fn populate_two_ways(&mut self, start: usize, len: usize) -> bool {
        let Some(end) = start.checked_add(len).filter(|&e| e <= self.raw.len()) else {
            return false;
        };
        let two_cpus = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
        if len < TWO_WAY_MIN || !two_cpus || !self.writable {
            return false;
        }
        // The map's address, with its provenance exposed so the helper can rebuild pointers
        // into it (a raw pointer cannot cross threads).
        let base = self.raw.as_mut_ptr().expose_provenance();
        let chunks = len.div_ceil(TWO_WAY_CHUNK);
        // (next chunk from the front, one past the next from the back, a thread failed)
        let claims = std::sync::Mutex::new((0usize, chunks, false));
        let claim = |front: bool| -> Option<usize> {
            let mut c = claims
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if c.2 || c.0 >= c.1 {
                return None;
            }
            if front {
                c.0 += 1;
                Some(c.0 - 1)
            } else {
                c.1 -= 1;
                Some(c.1)
            }
        };
        let fail = || {
            claims
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .2 = true
        };
        let one = |k: usize| -> bool {
            let lo = start + k * TWO_WAY_CHUNK;
            let hi = (lo + TWO_WAY_CHUNK).min(end);
            let at = std::ptr::with_exposed_provenance_mut::<u8>(base + lo);
            // SAFETY: `start <= lo < hi <= end <= map.len()` (k < chunks), so `at .. at + (hi
            // - lo)` lies inside the map, which stays mapped: `self` is borrowed mutably
            // until both threads are joined (the scope ends before this function returns).
            // MADV_POPULATE_WRITE faults the pages in as a write would and never changes
            // their contents, so it races with no access.
            unsafe {
                rustix::mm::madvise(at.cast(), hi - lo, rustix::mm::Advice::LinuxPopulateWrite)
            }
            .is_ok()
        };
        let run = |front: bool| {
            while let Some(k) = claim(front) {
                if !one(k) {
                    fail();
                    return;
                }
            }
        };
        std::thread::scope(|s| {
            let helper = std::thread::Builder::new()
                .name("stridemap-populate".into())
                .spawn_scoped(s, || run(false));
            run(true);
            if let Ok(h) = helper {
                let _ = h.join();
            }
        });
        let c = claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !c.2 && c.0 >= c.1
    }
}

/// Fresh segments of at least this many bytes are prefaulted by two threads
/// ([`SegmentMap::populate_two_ways`]).
pub(crate) const TWO_WAY_MIN: usize = 16 << 20;
/// The bytes each thread of [`SegmentMap::populate_two_ways`] claims at a time (whole huge
/// pages).
const TWO_WAY_CHUNK: usize = 8 << 20;

impl<T: stridemap::Element> crate::SharedArrayMut<T> {
    /// The elements in memory order, to fill in place, whatever the segment: a named file
    /// too, on the caller's promise. Prefer [`as_mut_slice`](crate::SharedArrayMut::as_mut_slice)
    /// (a private memfd, checked by the kernel) or
    /// [`volatile_view_mut`](crate::SharedArrayMut::volatile_view_mut) (no reference).
    ///
    /// ```
    /// use stridemap_shm::{Order, Pool};
    /// let pool = Pool::new()?;
    /// let mut a = pool.alloc::<f64>(&[3], Order::C)?;
    /// // SAFETY: no other process of this user or root opens the pool's files meanwhile.
    /// unsafe { a.as_mut_slice_unchecked() }.fill(2.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// It cannot be called by accident:
    ///
    /// ```compile_fail,E0133
    /// # fn f(a: &mut stridemap_shm::SharedArrayMut<f64>) {
    /// a.as_mut_slice_unchecked().fill(2.0);
    /// # }
    /// ```
    ///
    /// # Safety
    /// While the slice lives, nobody else writes or truncates the segment's file: no other
    /// process (a named file in the pool's folder can be opened for writing by every process
    /// of this user, and by root whatever its mode) and no other map or file handle in this
    /// one. A write meanwhile is undefined behaviour: the compiler may assume the slice's
    /// values change only through it.
    pub unsafe fn as_mut_slice_unchecked(&mut self) -> &mut [T] {
        let n = self.layout().nbytes() as usize;
        let Ok(seg) = self.segment_mut() else {
            return &mut [];
        };
        let (map, off) = seg.map_mut();
        // SAFETY: the caller's promise (`# Safety`) is `bytes_mut_unchecked`'s contract, for
        // this map and the slice's life (the slice borrows `self`, which owns the map).
        let bytes = unsafe { map.bytes_mut_unchecked() };
        let data = bytes
            .get_mut(off..)
            .and_then(|d| d.get_mut(..n))
            .unwrap_or_default();
        bytemuck::try_cast_slice_mut(data).unwrap_or_default()
    }
}
