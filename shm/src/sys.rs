//! The crate's only `unsafe` code: the producer's map of a segment ([`SegmentMap`]), freezing
//! a memfd for good, prefaulting, and the raw views of segments others may write.
//!
//! # The soundness argument
//!
//! memmap2's contract: no reference to mapped bytes while anyone else can change them. The
//! map is a `memmap2::MmapRaw`, which makes no reference by itself (its `as_ptr`, `len` are
//! inherent; `Mmap`/`MmapMut` reach them through `Deref` to a whole-map slice). References
//! to its bytes are made in two places only:
//!
//! - [`SegmentMap::frozen_bytes`]: `&[u8]` of a map that [`SegmentMap::freeze`] made. It
//!   dropped the writable map, sealed the memfd `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW`
//!   (the kernel grants `F_SEAL_WRITE` only when no writable map of the file exists anywhere,
//!   and refuses every writer after), mapped it again read-only and read the seals back on
//!   the fd. Nothing can change those bytes for the rest of the file's life.
//! - [`SegmentMap::bytes_mut_unchecked`]: an `unsafe fn`; its caller promises.
//!
//! Nothing else lends a reference, the producer's fill included. Before
//! [`SegmentMap::freeze`], any process of this user (or root) may map the segment writable:
//! a named file by path, a memfd through `/proc/<pid>/fd/N`, which needs only
//! `PTRACE_MODE_READ` (Yama's `ptrace_scope = 1` restricts `/proc/<pid>/mem`, not that), and
//! a writable map made before a seal outlives it (`F_SEAL_FUTURE_WRITE` included). So until
//! the kernel has granted `F_SEAL_WRITE` on the fd this process holds, which it does only
//! when no writable map is left anywhere, no reference is sound.
//!
//! Every other access (the producer's fill, outputs, named files, segments shared unfrozen,
//! the header of a recycled segment) is raw:
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
    /// Lends `&[u8]`: a memfd [`SegmentMap::freeze`] sealed `F_SEAL_WRITE` (else none:
    /// others may write the file).
    frozen: bool,
    /// The file mapped, as `fstat` named it when the map was made: [`SegmentMap::freeze`]
    /// seals and remaps only this file.
    file: FileId,
}

/// A file's identity while it is open: `(st_dev, st_ino)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

/// The identity and size (`st_size`) of the file `fd` refers to, read with `fstat`.
fn file_id(fd: impl AsFd) -> io::Result<(FileId, u64)> {
    let st = rustix::fs::fstat(fd)?;
    let id = FileId {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
    };
    Ok((id, u64::try_from(st.st_size).unwrap_or(0)))
}

/// A segment's file before the producer maps it: a named file or a new memfd, with only the
/// operations the producer needs before mapping.
#[derive(Debug)]
pub(crate) struct NewFile {
    file: File,
}

impl NewFile {
    /// A named file.
    pub(crate) fn named(file: File) -> NewFile {
        NewFile { file }
    }

    /// A new memfd (`memfd_create(name, flags)`).
    pub(crate) fn memfd(name: &str, flags: MemfdFlags) -> rustix::io::Result<NewFile> {
        let fd = memfd_create(name, flags)?;
        Ok(NewFile {
            file: File::from(fd),
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
    /// and the file. The map lends nothing until [`SegmentMap::freeze`].
    pub(crate) fn map(self, len: usize, populate: bool) -> io::Result<(File, SegmentMap)> {
        let mut opts = MmapOptions::new();
        opts.len(len);
        if populate {
            opts.populate();
        }
        let (file, _) = file_id(&self.file)?;
        // A raw map is safe to make: it lends no reference (module docs).
        let raw = opts.map_raw(&self.file)?;
        let map = SegmentMap {
            raw,
            writable: true,
            frozen: false,
            file,
        };
        Ok((self.file, map))
    }
}

/// Whether `file` is in a tmpfs.
pub(crate) fn is_tmpfs(file: &File) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    rustix::fs::fstatfs(file).is_ok_and(|st| st.f_type as u64 == TMPFS_MAGIC)
}

/// Whether `file` is sealed `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW` (read on this fd).
fn sealed_for_good(file: impl AsFd) -> bool {
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
        self.frozen
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
    ///
    /// # Errors
    /// `InvalidInput`, and nothing changed, if `file` or `read_only` is not the file this map
    /// was made of (`fstat`'s `(st_dev, st_ino)` differ); else the kernel's.
    pub(crate) fn freeze(&mut self, file: &File, read_only: impl AsFd) -> io::Result<()> {
        if self.frozen {
            return Ok(());
        }
        let read_only = read_only.as_fd();
        if file_id(file)?.0 != self.file || file_id(read_only)?.0 != self.file {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "freezing a segment map through a file it does not map",
            ));
        }
        let ro = MmapOptions::new()
            .len(self.raw.len())
            .map_raw_read_only(read_only.as_raw_fd())?;
        drop(std::mem::replace(&mut self.raw, ro));
        self.writable = false;
        let seals = SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
        if let Err(e) = fcntl_add_seals(file, seals) {
            if let Ok(w) = MmapOptions::new().len(self.raw.len()).map_raw(file) {
                // Not frozen: it lends nothing, as before.
                self.raw = w;
                self.writable = true;
            }
            return Err(e.into());
        }
        // Read on the fd the read-only map was just made through, so on the file it shows
        // (an fd names one file for its life): sealed for good, and at least `len` bytes
        // long (it can no longer shrink). Not frozen otherwise: it lends nothing.
        self.frozen = sealed_for_good(read_only)
            && file_id(read_only).is_ok_and(|(_, size)| size >= self.raw.len() as u64);
        Ok(())
    }

    /// The bytes, if frozen.
    pub(crate) fn frozen_bytes(&self) -> Option<&[u8]> {
        if !self.frozen {
            return None;
        }
        // SAFETY: `frozen` is set only by `freeze`, right after it replaced the map by a
        // read-only one made through fd R, and only if then `F_GET_SEALS` on R read
        // `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW` and `fstat` on R a size of at least
        // `len`. R names the file this map shows, so the kernel holds that file with no
        // writable map anywhere (the seal is granted only then) and refuses every write, new
        // writable map and resize from then on; seals are never removed. So the `len` mapped
        // bytes stay backed and unchanged while `self` is borrowed (the map lives that long).
        Some(unsafe { std::slice::from_raw_parts(self.raw.as_ptr(), self.raw.len()) })
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
        // is writable (checked). No reference to it is used meanwhile: the map lends one
        // only through `frozen_bytes` (never while writable) and `bytes_mut_unchecked`, both
        // excluded by the mutable borrow. Other writers (other processes, a map of the memfd
        // through /proc/self/fd in this one) may change the bytes: the view only sees values.
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
    /// The elements in memory order, to fill in place before
    /// [`freeze`](crate::SharedArrayMut::freeze), on the caller's promise: the kernel does
    /// not keep other processes from writing an unfrozen segment. Prefer
    /// [`copy_from_slice`](crate::SharedArrayMut::copy_from_slice),
    /// [`fill`](crate::SharedArrayMut::fill) or
    /// [`volatile_view_mut`](crate::SharedArrayMut::volatile_view_mut), which lend no
    /// reference.
    ///
    /// ```
    /// use stridemap_shm::{Order, Pool};
    /// let pool = Pool::new()?;
    /// let mut a = pool.alloc::<f64>(&[3], Order::C)?;
    /// // SAFETY: no other process of this user or root opens the pool's files, or maps this
    /// // segment writable, while the slice lives.
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
    /// While the slice lives, nobody else writes or truncates the segment's file, and no
    /// other process maps it writable: no other process (a named file in the pool's folder
    /// can be opened for writing by every process of this user, and by root whatever its
    /// mode; a memfd likewise through `/proc/<pid>/fd/N`, by any process allowed to read
    /// this one's fds, and a writable map made then keeps writing whatever seals follow) and
    /// no other map or file handle in this one. A write meanwhile is undefined behaviour:
    /// the compiler may assume the slice's values change only through it.
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

#[cfg(test)]
mod tests {
    use std::fs::File;

    use rustix::fs::MemfdFlags;

    use super::NewFile;

    fn memfd(len: u64) -> NewFile {
        let f = NewFile::memfd("stridemap-test", MemfdFlags::ALLOW_SEALING).unwrap();
        f.set_len(len).unwrap();
        f
    }

    fn read_only(file: &File) -> File {
        File::open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(file)
        ))
        .unwrap()
    }

    /// `freeze` refuses a file it does not map (either argument), changing nothing, and
    /// freezes through the right one.
    #[test]
    fn freeze_checks_the_file() {
        let (file, mut map) = memfd(4096).map(4096, false).unwrap();
        let (other, _other_map) = memfd(4096).map(4096, false).unwrap();
        for (f, ro) in [(&other, &file), (&file, &other), (&other, &other)] {
            let e = map.freeze(f, read_only(ro)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
            assert!(map.is_writable() && !map.is_frozen() && map.frozen_bytes().is_none());
        }
        assert!(map.write_at(0, &[7]));
        map.freeze(&file, read_only(&file)).unwrap();
        assert!(map.is_frozen() && !map.is_writable());
        assert_eq!(map.frozen_bytes().map(|b| b[0]), Some(7));
    }
}
