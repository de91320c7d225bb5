//! One segment, producer side: a named file in the pool's folder or a sealed memfd, its
//! header, its lock, and the producer's writable map of it.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{
    AtFlags, FallocateFlags, FlockOperation, MemfdFlags, OFlags, SealFlags, fallocate,
    fcntl_add_seals, fcntl_get_seals, flock, fstat, openat, unlinkat,
};
use rustix::io::Errno;
use stridemap_core::{
    Builder, DType, Layout, Mode, SEGMENT_DATA_OFFSET, SegmentHeader, ValidDescriptor,
};
use zerocopy::IntoBytes;

use crate::huge::{PageBacking, Plan};
use crate::temp::PoolFolder;
use crate::{Error, Result, sys};

/// What holds a segment's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Backing {
    /// A file in a pool folder, opened by path.
    File(PathBuf),
    /// An anonymous memfd, passed as an fd.
    Memfd,
}

/// How a new segment gets its bytes.
#[derive(Clone, Copy)]
pub(crate) enum Fill<'a> {
    /// Reserve the space (fallocate) and leave it zeroed, to be filled through the map.
    Reserve(u64),
    /// Write these bytes at the data offset with write(2) (which allocates as it goes).
    Write(&'a [u8]),
}

/// A segment as its producer holds it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) id: [u8; 16],
    pub(crate) backing: Backing,
    /// The producer's own open file description (read-write); holds `LOCK_SH` while in use.
    file: File,
    /// The producer's map of the whole file, header included: writable, or read-only once
    /// frozen.
    map: sys::SegmentMap,
    /// Data bytes available after the header.
    pub(crate) capacity: u64,
    /// Where the data starts in the file ([`SEGMENT_DATA_OFFSET`], or the huge page size).
    pub(crate) data_offset: u64,
    /// The mechanism backing the segment's pages.
    pub(crate) plan: Plan,
    pub(crate) generation: u64,
    pub(crate) identity: (u64, u64),
    /// Data bytes used by the last array (what to prefault when recycling).
    pub(crate) used: u64,
    /// memfd only: sealed against future writes (`F_SEAL_FUTURE_WRITE`, shared unfrozen): the
    /// producer's map still writes it, consumers never can; cannot serve outputs again.
    pub(crate) sealed: bool,
    /// Once served an output array: consumers held writable fds (and may still hold a
    /// writable map, or write(2) through an fd, whatever the lock says), so it never again
    /// serves an array the producer lends references into.
    pub(crate) lent_writable: bool,
    /// Whether the producer map is prefaulted up to `used`.
    pub(crate) populated: bool,
    /// memfd only: a read-only open file description made ahead for the next receiver, so
    /// that re-opening `/proc/self/fd/N` (the slowest step of a handoff) happens after a send
    /// rather than on its path.
    spare: std::sync::Mutex<Option<OwnedFd>>,
    /// Files only: the pool folder the file is in (its fd, for unlinking; holding it keeps
    /// the folder's liveness lock while the segment exists).
    folder: Option<Arc<PoolFolder>>,
}

fn io_err<'p>(what: &str, path: &'p Path) -> impl Fn(std::io::Error) -> Error + 'p {
    let what = what.to_string();
    move |e| Error::from_io(format!("{what} {}", path.display()), path, e)
}

fn errno<'p>(what: &'static str, path: &'p Path) -> impl Fn(Errno) -> Error + 'p {
    move |e| match e {
        Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL => Error::Unsupported {
            feature: what,
            source: e.into(),
        },
        _ => Error::from_io(what, path, e.into()),
    }
}

/// ENOSPC as [`Error::RanOutOfSpace`] for `needed` bytes; other errors as [`errno`] says.
fn nospace<'p>(where_: &'p Path, needed: u64) -> impl Fn(Errno) -> Error + 'p {
    move |e| match e {
        Errno::NOSPC => Error::RanOutOfSpace {
            folder: where_.to_path_buf(),
            needed: Some(needed),
            source: e.into(),
        },
        e => errno("fallocate", where_)(e),
    }
}

/// A failed MADV_POPULATE_WRITE: out of memory or space (ENOMEM, or EFAULT for what would
/// have been a SIGBUS) as [`Error::RanOutOfSpace`], anything else as it is.
fn populate_err(where_: &Path, needed: u64, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(c) if c == Errno::NOMEM.raw_os_error() || c == Errno::FAULT.raw_os_error() => {
            Error::RanOutOfSpace {
                folder: where_.to_path_buf(),
                needed: Some(needed),
                source: e,
            }
        }
        _ => Error::from_io("prefaulting a segment", where_, e),
    }
}

impl Segment {
    /// Creates `seg-<uuid>` in `folder` (O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode 0600) with
    /// room for `capacity` data bytes, filled as `fill` says. On error the file is removed.
    pub(crate) fn create_file(
        folder: &Arc<PoolFolder>,
        capacity: u64,
        fill: Fill<'_>,
        populate: bool,
        plan: Plan,
    ) -> Result<Segment> {
        let id = *uuid::Uuid::new_v4().as_bytes();
        let name = format!("seg-{}", uuid::Uuid::from_bytes(id).simple());
        let path = folder.path.join(&name);
        // Relative to the folder's fd: whatever happens to the path of the folder meanwhile,
        // the file is made in the folder this pool created and locked.
        let fd = openat(
            &folder.fd,
            name.as_str(),
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .map_err(|e| Error::from_io("creating", &path, e.into()))?;
        let made = Segment::init(
            id,
            Backing::File(path),
            sys::NewFile::named(File::from(fd)),
            capacity,
            fill,
            populate,
            plan,
        );
        match made {
            Ok(mut seg) => {
                seg.folder = Some(folder.clone());
                Ok(seg)
            }
            Err(e) => {
                let _ = unlinkat(&folder.fd, name.as_str(), AtFlags::empty());
                Err(e)
            }
        }
    }

    /// Creates a memfd (MFD_ALLOW_SEALING | MFD_CLOEXEC, plus MFD_HUGETLB for a hugetlb
    /// plan) with room for `capacity` data bytes, sealed against shrinking and growing once
    /// sized.
    pub(crate) fn create_memfd(
        capacity: u64,
        fill: Fill<'_>,
        populate: bool,
        plan: Plan,
    ) -> Result<Segment> {
        let id = *uuid::Uuid::new_v4().as_bytes();
        let name = format!("stridemap-{}", uuid::Uuid::from_bytes(id).simple());
        let mut flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        if plan.backing == PageBacking::HugetlbMemfd {
            // MFD_HUGE_SHIFT is 26: the page size's log2 in the flags' top bits.
            flags |= MemfdFlags::HUGETLB
                | MemfdFlags::from_bits_retain(plan.page_size.trailing_zeros() << 26);
        }
        let file =
            sys::NewFile::memfd(&name, flags).map_err(errno("memfd_create", Path::new("memfd")))?;
        let mut seg = Segment::init(id, Backing::Memfd, file, capacity, fill, populate, plan)?;
        fcntl_add_seals(&seg.file, SealFlags::SHRINK | SealFlags::GROW)
            .map_err(errno("memfd seals", Path::new("memfd")))?;
        seg.sealed = fcntl_get_seals(&seg.file).is_ok_and(|s| s.contains(SealFlags::FUTURE_WRITE));
        Ok(seg)
    }

    fn init(
        id: [u8; 16],
        backing: Backing,
        file: sys::NewFile,
        capacity: u64,
        fill: Fill<'_>,
        populate: bool,
        plan: Plan,
    ) -> Result<Segment> {
        let where_ = match &backing {
            Backing::File(p) => p.clone(),
            Backing::Memfd => PathBuf::from("memfd"),
        };
        let data_offset = plan.data_offset();
        let too_big = || Error::TooLarge {
            bytes: data_offset.saturating_add(capacity),
        };
        let file_len = data_offset.checked_add(capacity).ok_or_else(too_big)?;
        let header = SegmentHeader::new(id, 1, capacity, std::process::id())
            .with_data_offset(u32::try_from(data_offset).map_err(|_| too_big())?);
        let len = usize::try_from(file_len).map_err(|_| too_big())?;
        let filled = match &fill {
            Fill::Reserve(n) => *n,
            Fill::Write(bytes) => bytes.len() as u64,
        };
        let in_memory = backing == Backing::Memfd || file.is_tmpfs();
        admit_memory(in_memory, &where_, plan, data_offset.saturating_add(filled))?;
        let (file, mut map, used) = if plan.backing.is_huge() {
            Segment::fill_huge(file, &where_, &header, fill, populate, plan, len)?
        } else {
            file.write_all_at(header.as_bytes(), 0)
                .map_err(io_err("writing the header of", &where_))?;
            let used = match fill {
                Fill::Reserve(n) => {
                    // Reserve the space now, so a full filesystem is an error here and not
                    // a SIGBUS when the map is written.
                    file.fallocate(0, SEGMENT_DATA_OFFSET + n)
                        .map_err(nospace(&where_, SEGMENT_DATA_OFFSET + n))?;
                    n
                }
                Fill::Write(bytes) => {
                    file.write_all_at(bytes, SEGMENT_DATA_OFFSET)
                        .map_err(io_err("writing", &where_))?;
                    bytes.len() as u64
                }
            };
            file.set_len(file_len).map_err(io_err("sizing", &where_))?;
            let (file, map) = file
                .map(len, populate)
                .map_err(io_err("mapping", &where_))?;
            (file, map, used)
        };
        // A large segment to be filled in place: its pages' first touch shared by two threads
        // now (the space is already reserved: fallocate, or a hugetlb map). A hint.
        let mut populated = populate;
        if let Fill::Reserve(n) = fill
            && !populate
            && let Ok(n) = usize::try_from(n)
        {
            populated = map.populate_two_ways(data_offset as usize, n);
        }
        let st = fstat(&file).map_err(errno("fstat", &where_))?;
        let seg = Segment {
            id,
            backing,
            file,
            map,
            capacity,
            data_offset,
            plan,
            generation: 1,
            identity: (st.st_dev, st.st_ino),
            used,
            sealed: false,
            lent_writable: false,
            populated,
            spare: std::sync::Mutex::new(None),
            folder: None,
        };
        seg.lock_shared()?;
        log::debug!(
            "stridemap: created segment {} ({} bytes) at {} in {}",
            seg.name(),
            capacity,
            where_.display(),
            plan.backing
        );
        Ok(seg)
    }

    /// Sizes, reserves, maps and fills a segment in huge pages. The file is sized first, so
    /// that the kernel sees the whole huge pages the data will use (tmpfs `huge=within_size`
    /// allocates a huge page only inside the file's size); hugetlb files cannot be written
    /// with write(2), so their header and data go through the map.
    fn fill_huge(
        file: sys::NewFile,
        where_: &Path,
        header: &SegmentHeader,
        fill: Fill<'_>,
        populate: bool,
        plan: Plan,
        len: usize,
    ) -> Result<(File, sys::SegmentMap, u64)> {
        let off = plan.data_offset();
        if plan.is_thp() {
            // The header's page, written while the file is still small, stays a base page.
            file.write_all_at(header.as_bytes(), 0)
                .map_err(io_err("writing the header of", where_))?;
        }
        file.set_len(len as u64).map_err(io_err("sizing", where_))?;
        let n = match &fill {
            Fill::Reserve(n) => *n,
            Fill::Write(bytes) => bytes.len() as u64,
        };
        // Space is reserved without writing a page where that is possible, so that the fill
        // is the only pass over the memory (the kernel zeroes each huge page as the fill
        // faults it in, while it is still in the cache):
        // - hugetlb: the shared map reserves the pages of the whole file (mmap fails with
        //   ENOMEM when there are too few), so no later fault can fail;
        // - a THP memfd lives in the kernel's internal tmpfs, which has no size limit;
        // - a named file in a tmpfs of limited size gets its pages now (fallocate, or faults
        //   through the advised map), so a full tmpfs is an error here and not a SIGBUS.
        if plan.backing == PageBacking::ThpFile && !plan.advise_only {
            file.fallocate(off, n.max(1))
                .map_err(nospace(where_, off + n))?;
        }
        let (file, mut map) = file.map(len, populate).map_err(|e| {
            if plan.backing.is_hugetlb() && e.raw_os_error() == Some(Errno::NOMEM.raw_os_error()) {
                Error::NoSpace {
                    folder: where_.to_path_buf(),
                    needed: len as u64,
                    available: 0,
                    limit: None,
                }
            } else {
                io_err("mapping", where_)(e)
            }
        })?;
        if plan.is_thp()
            && let Err(e) = map.advise_huge()
        {
            log::debug!("stridemap: MADV_HUGEPAGE on {}: {e}", where_.display());
        }
        // A THP memfd to be filled in place is prefaulted too (fallocate would give it base
        // pages): readers refuse a shared-memory file with holes in its buffer (SPEC §6 O12).
        let thp_memfd_in_place =
            plan.backing == PageBacking::ThpMemfd && matches!(fill, Fill::Reserve(_));
        if (plan.advise_only && plan.backing == PageBacking::ThpFile) || thp_memfd_in_place {
            // Only a fault through the advised map allocates huge pages: reserve by
            // prefaulting it (a full tmpfs fails here rather than with a SIGBUS later).
            map.populate_range(off as usize, n as usize)
                .map_err(|e| populate_err(where_, off + n, e))?;
        }
        if plan.backing.is_hugetlb() {
            map.write_at(0, header.as_bytes());
        }
        if let Fill::Write(bytes) = fill {
            map.write_at(off as usize, bytes);
        }
        Ok((file, map, n))
    }

    /// A short name for logs.
    pub(crate) fn name(&self) -> String {
        uuid::Uuid::from_bytes(self.id).simple().to_string()
    }

    pub(crate) fn file_len(&self) -> u64 {
        self.data_offset + self.capacity
    }

    /// The data area, if the segment is frozen (a memfd sealed for good): the only bytes
    /// the producer lends references to once consumers may map them.
    pub(crate) fn frozen_data(&self) -> Option<&[u8]> {
        self.map.frozen_bytes()?.get(self.data_offset as usize..)
    }

    /// Copies `src` to byte `at` of the data area through a raw copy (no reference: others
    /// may map the segment until it is frozen); false (nothing written) if it does not fit
    /// or the map is read-only.
    pub(crate) fn write_data(&mut self, at: usize, src: &[u8]) -> bool {
        let Some(off) = (self.data_offset as usize).checked_add(at) else {
            return false;
        };
        self.map.write_at(off, src)
    }

    /// The producer's map and the data offset (for `sys`'s unchecked fill).
    pub(crate) fn map_mut(&mut self) -> (&mut sys::SegmentMap, usize) {
        (&mut self.map, self.data_offset as usize)
    }

    /// Copies the elements of `view`, packed in C order, to the start of the data area,
    /// through raw copies only (others may map the segment until it is frozen).
    pub(crate) fn write_elements(&mut self, view: &stridemap::ByteView<'_>) {
        let start = self.data_offset as usize;
        let span = view.layout().span();
        if view.layout().is_c_contiguous()
            && let Some(src) = view.buffer().get(span.start as usize..span.end as usize)
        {
            self.map.write_at(start, src);
            return;
        }
        // Gathered into a buffer of this process, then copied raw, 256 KiB at a time.
        const CHUNK: usize = 256 << 10;
        let mut buf = Vec::with_capacity(CHUNK);
        let mut at = start;
        for e in view.elements() {
            buf.extend_from_slice(e);
            if buf.len() >= CHUNK {
                self.map.write_at(at, &buf);
                at += buf.len();
                buf.clear();
            }
        }
        self.map.write_at(at, &buf);
    }

    /// Whether the segment is a memfd sealed for good, mapped read-only.
    pub(crate) fn is_frozen(&self) -> bool {
        self.map.is_frozen()
    }

    /// Whether the producer's map still writes the segment (not frozen).
    pub(crate) fn is_writable(&self) -> bool {
        self.map.is_writable()
    }

    /// `layout` over the data area, raw reads only: for bytes others may write.
    pub(crate) fn data_view<T: stridemap::Element>(
        &self,
        layout: Layout,
    ) -> stridemap::ViewResult<stridemap::VolatileView<'_, T>> {
        self.map.view_at(self.data_offset as usize, layout)
    }

    /// `layout` over the data area of an array consumers write: raw reads and writes only.
    pub(crate) fn output_view_mut<T: stridemap::Element>(
        &mut self,
        layout: Layout,
    ) -> stridemap::ViewResult<stridemap::VolatileViewMut<'_, T>> {
        self.map.view_mut_at(self.data_offset as usize, layout)
    }

    /// The producer's shared lock (SPEC.md §7).
    pub(crate) fn lock_shared(&self) -> Result<()> {
        flock(&self.file, FlockOperation::LockShared).map_err(|e| Error::Io {
            context: "flock(LOCK_SH) on a segment".into(),
            source: e.into(),
        })
    }

    /// Tries to become the only user (LOCK_EX | LOCK_NB): true when nobody else maps it.
    pub(crate) fn try_lock_exclusive(&self) -> Result<bool> {
        match flock(&self.file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(true),
            Err(Errno::WOULDBLOCK) => Ok(false),
            Err(e) => Err(Error::Io {
                context: "flock(LOCK_EX) on a segment".into(),
                source: e.into(),
            }),
        }
    }

    pub(crate) fn unlock(&self) {
        let _ = flock(&self.file, FlockOperation::Unlock);
    }

    /// Starts the next use: a new generation in the header (old descriptors are refused from
    /// now on). Called with the exclusive lock held.
    pub(crate) fn next_generation(&mut self) {
        self.generation += 1;
        let header =
            SegmentHeader::new(self.id, self.generation, self.capacity, std::process::id())
                .with_data_offset(self.data_offset as u32);
        // Raw: an output's consumers may still map it (writable), whatever the lock says.
        self.map.write_at(0, header.as_bytes());
    }

    /// Makes room for `n` data bytes of a new use (fallocate beyond what was used).
    pub(crate) fn reserve(&mut self, n: u64) -> Result<()> {
        if n > self.used {
            let where_ = self
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| "memfd".into());
            let in_memory = self.backing == Backing::Memfd || sys::is_tmpfs(&self.file);
            admit_memory(in_memory, &where_, self.plan, n - self.used)?;
            let backing = self.plan.backing;
            if backing.is_hugetlb() || backing == PageBacking::ThpMemfd {
                // Reserved by the map, or no limit (see `fill_huge`).
            } else if self.plan.advise_only {
                // As when it was made: only the advised map allocates huge pages.
                let (off, n) = (self.data_offset as usize, n as usize);
                self.map
                    .populate_range(off, n)
                    .map_err(|e| populate_err(&where_, (off + n) as u64, e))?;
            } else {
                fallocate(&self.file, FallocateFlags::KEEP_SIZE, self.data_offset, n)
                    .map_err(nospace(&where_, n))?;
            }
        }
        self.used = self.used.max(n);
        Ok(())
    }

    /// Prefaults the producer map over the bytes last used.
    pub(crate) fn populate(&mut self) {
        if !self.populated {
            let len = (self.data_offset + self.used) as usize;
            self.map.populate_write(len);
            self.populated = true;
        }
    }

    /// Frozen for good (memfds): the writable map dropped, sealed `F_SEAL_WRITE |
    /// F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, mapped again read-only. Nobody, this
    /// process included, writes it again, so it is never recycled. Files cannot be frozen:
    /// they get [`publish`](Segment::publish)'s mode 0400.
    pub(crate) fn freeze(&mut self) -> Result<()> {
        match &self.backing {
            Backing::Memfd => {
                let ro = self.fd_for_peer(false)?;
                self.map.freeze(&self.file, &ro).map_err(|e| {
                    let busy = e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error());
                    let context = if busy {
                        "sealing a memfd F_SEAL_WRITE: another mapping of it is writable (in \
                         another process, e.g. one that opened /proc/<pid>/fd/N, or a view of \
                         it not dropped yet), so it cannot be frozen; publish() shares an \
                         array unfrozen"
                    } else {
                        "sealing a memfd F_SEAL_WRITE"
                    };
                    Error::from_io(context, Path::new("memfd"), e)
                })?;
                if self.plan.is_thp() {
                    let _ = self.map.advise_huge();
                }
                if self.plan.backing.is_huge() {
                    self.map.populate_read();
                }
                self.sealed = true;
                Ok(())
            }
            Backing::File(_) => self.publish(),
        }
    }

    /// Read-only for consumers from now on, but not frozen: memfds get F_SEAL_FUTURE_WRITE
    /// (the kernel refuses new writable maps and writes; this process's map stays writable
    /// for recycling), files get mode 0400.
    pub(crate) fn publish(&mut self) -> Result<()> {
        match &self.backing {
            Backing::Memfd => {
                if !self.sealed {
                    fcntl_add_seals(&self.file, SealFlags::FUTURE_WRITE).map_err(errno(
                        "F_SEAL_FUTURE_WRITE (Linux 5.1+)",
                        Path::new("memfd"),
                    ))?;
                    self.sealed = true;
                }
            }
            Backing::File(p) => {
                self.file
                    .set_permissions(std::fs::Permissions::from_mode(0o400))
                    .map_err(io_err("chmod", p))?;
            }
        }
        Ok(())
    }

    /// Writable for consumers again (files only; a sealed memfd stays read-only).
    pub(crate) fn thaw(&mut self) -> Result<()> {
        if let Backing::File(p) = &self.backing {
            self.file
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io_err("chmod", p))?;
        }
        Ok(())
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        match &self.backing {
            Backing::File(p) => Some(p),
            Backing::Memfd => None,
        }
    }

    /// The descriptor of `layout` (inside the data area) with elements `dtype`.
    pub(crate) fn describe(
        &self,
        dtype: DType,
        layout: &Layout,
        mode: Mode,
    ) -> Result<ValidDescriptor> {
        let mut b = Builder::new(dtype, layout.shape())
            .strides(layout.strides())
            .offset(layout.offset())
            .buffer(self.data_offset, self.buffer_len(layout))
            .file_len(self.file_len())
            .mode(mode)
            .identity(self.identity.0, self.identity.1)
            .segment_id(self.id)
            .generation(self.generation);
        if layout.is_f_contiguous() && !layout.is_c_contiguous() {
            b = b.order(stridemap_core::Order::F);
        }
        let path_str;
        b = match &self.backing {
            Backing::File(p) => {
                path_str = p.to_str().ok_or_else(|| Error::Io {
                    context: format!("segment path {} is not UTF-8", p.display()),
                    source: std::io::Error::other("non-UTF-8 path"),
                })?;
                b.path(path_str)
            }
            Backing::Memfd => b.fd(),
        };
        Ok(b.build()?)
    }

    /// The buffer a descriptor names: the array's bytes, or for hugetlb the whole data area,
    /// whole huge pages (a hugetlb mapping whose length is not a multiple of its page size
    /// cannot be unmapped: munmap fails with EINVAL and the mapping would leak).
    fn buffer_len(&self, layout: &Layout) -> u64 {
        if self.plan.backing.is_hugetlb() {
            self.capacity
        } else {
            layout.buffer_len()
        }
    }

    /// The mechanism backing the pages.
    pub(crate) fn page_backing(&self) -> PageBacking {
        self.plan.backing
    }

    /// Bytes of the producer's map the kernel maps with huge pages now.
    pub(crate) fn huge_mapped(&self) -> std::io::Result<u64> {
        crate::huge::huge_mapped(self.map.addr(), self.map.len())
    }

    /// A read-only open file description for the next receiver: the spare if one is ready.
    pub(crate) fn take_peer_fd(&self) -> Result<OwnedFd> {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match spare {
            Some(fd) => Ok(fd),
            None => self.fd_for_peer(false),
        }
    }

    /// Makes the spare read-only fd ready (memfds only; a failure just leaves none).
    pub(crate) fn refill_spare(&self) {
        if self.backing != Backing::Memfd {
            return;
        }
        let mut spare = self
            .spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if spare.is_none() {
            *spare = self.fd_for_peer(false).ok();
        }
    }

    /// Drops the spare (a recycled segment's next use gets fresh ones).
    pub(crate) fn clear_spare(&self) {
        self.spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }

    /// A new open file description of this segment for a peer (SPEC.md §7: each receiver
    /// locks its own), read-only unless `writable`.
    pub(crate) fn fd_for_peer(&self, writable: bool) -> Result<OwnedFd> {
        let proc_path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.file)
        );
        let flags = if writable {
            rustix::fs::OFlags::RDWR
        } else {
            rustix::fs::OFlags::RDONLY
        };
        rustix::fs::open(
            &proc_path,
            flags | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            Error::from_io(
                "reopening a segment for a peer",
                Path::new(&proc_path),
                e.into(),
            )
        })
    }

    /// Deletes the file (files only; a memfd goes away with its last fd and map). Idempotent:
    /// a file already gone is fine.
    pub(crate) fn unlink(&self) {
        if let (Backing::File(p), Some(folder)) = (&self.backing, &self.folder) {
            let name = p.file_name().unwrap_or_default();
            match unlinkat(&folder.fd, name, AtFlags::empty()).map_err(std::io::Error::from) {
                Ok(()) => log::debug!("stridemap: unlinked segment {}", p.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("stridemap: cannot unlink {}: {e}", p.display()),
            }
        }
    }
}

/// The admission check ([`crate::admit`]) for `bytes` more of a segment's file, when they are
/// memory (`in_memory`: a memfd, or a file in a tmpfs); never hugetlb pages (reserved apart).
fn admit_memory(in_memory: bool, where_: &Path, plan: Plan, bytes: u64) -> Result<()> {
    if plan.backing.is_hugetlb() {
        return Ok(());
    }
    if in_memory {
        crate::admit::check(bytes, where_)?;
    }
    Ok(())
}
