//! The crate's only `unsafe` code: the producer's writable map of a segment, prefaulting it,
//! and the raw views of the segments consumers write.
//!
//! # The soundness argument
//!
//! memmap2's contract: no reference to mapped bytes while anyone else can change them. The
//! producer's map of a segment is turned into references (`&[u8]`, `&mut [u8]`, views) only
//! while nobody else can write the bytes:
//!
//! - an array from `Pool::alloc` ([`SharedArrayMut`](crate::SharedArrayMut)) before it is
//!   frozen: no descriptor or fd of this use has left the process, and readers of a recycled
//!   segment's earlier use are gone (the producer holds the exclusive lock when it recycles,
//!   SPEC.md §7; old descriptors are refused by the header's generation);
//! - a frozen array ([`SharedArray`](crate::SharedArray)): a memfd is sealed with
//!   `F_SEAL_FUTURE_WRITE` (the kernel refuses every new writer) and this process writes its
//!   own map again only after the last reader unmapped; a named file is mode 0400 in a 0700
//!   folder, so only processes of this user could make it writable again, and those can
//!   write this process's memory anyway (ptrace, `/proc/<pid>/mem`), which is outside what
//!   Rust's safety promises;
//! - the producer's own writes of a new use (`Pool::share`, the header) under the same rules.
//!
//! An array from `Pool::alloc_output` ([`OutputArray`](crate::OutputArray)) is written by
//! consumers while the producer holds it: its bytes are only ever reached through raw
//! [`SharedView`]/[`SharedViewMut`] accesses ([`output_view`], [`output_view_mut`]), never a
//! reference.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::{MmapMut, MmapOptions};
use stridemap::{Element, Layout, SharedView, SharedViewMut};

/// The whole of `file` (`len` bytes), shared and writable; `populate` prefaults it.
pub(crate) fn map_segment(file: &File, len: usize, populate: bool) -> io::Result<MmapMut> {
    let mut opts = MmapOptions::new();
    opts.len(len);
    if populate {
        opts.populate();
    }
    // SAFETY: the file was created by this process with length ≥ `len` (set before mapping)
    // and is never shrunk while mapped (named segments are deleted, never truncated; memfds
    // are sealed against shrinking), so every byte stays backed. References to the map are
    // made only while nobody else can write it (module docs); `OutputArray` reaches it only
    // through raw views.
    unsafe { opts.map_mut(file) }
}

/// Prefaults `map[..len]` for writing (MADV_POPULATE_WRITE, Linux 5.14+), so that the next
/// fill of a recycled segment runs at memcpy speed. Errors (older kernels) are ignored: the
/// pages then fault in on first write instead.
pub(crate) fn populate_write(map: &mut MmapMut, len: usize) {
    let len = len.min(map.len());
    if len == 0 {
        return;
    }
    // SAFETY: the range is inside a live mapping this function borrows mutably, so it stays
    // mapped for the call; MADV_POPULATE_WRITE only faults pages in (as a write would) and
    // never changes their contents.
    let _ = unsafe {
        rustix::mm::madvise(
            map.as_mut_ptr().cast(),
            len,
            rustix::mm::Advice::LinuxPopulateWrite,
        )
    };
}

/// Asks for transparent huge pages on the whole of `map` (`MADV_HUGEPAGE`): with
/// `shmem_enabled` (or a tmpfs `huge=`) set to `advise` the kernel then allocates the
/// segment's pages 2 MiB at a time when this map faults them; elsewhere it is a hint that
/// changes nothing. Errors (no THP in this kernel) are returned for the caller to log.
pub(crate) fn advise_huge(map: &mut MmapMut) -> io::Result<()> {
    if map.is_empty() {
        return Ok(());
    }
    // SAFETY: the whole range is a live mapping this function borrows mutably, so it stays
    // mapped for the call; MADV_HUGEPAGE only changes how future faults allocate pages,
    // never the contents.
    unsafe {
        rustix::mm::madvise(
            map.as_mut_ptr().cast(),
            map.len(),
            rustix::mm::Advice::LinuxHugepage,
        )
    }
    .map_err(io::Error::from)
}

/// Prefaults `map[start..start + len]` for writing (MADV_POPULATE_WRITE), reporting failure:
/// how a segment whose huge pages only an advised mapping gets reserves its space (a full
/// tmpfs is then an error here, not a SIGBUS on a later write).
pub(crate) fn populate_range(map: &mut MmapMut, start: usize, len: usize) -> io::Result<()> {
    let end = start
        .checked_add(len)
        .filter(|&e| e <= map.len())
        .ok_or_else(|| io::Error::other("range outside the segment map"))?;
    if start == end {
        return Ok(());
    }
    // No `&mut [u8]` of the range: an output array's bytes may be written by consumers.
    // SAFETY: `start ≤ end ≤ map.len()` (checked above), so `start` stays inside the map.
    let at = unsafe { map.as_mut_ptr().add(start) };
    // SAFETY: `at .. at + (end - start)` lies inside a live mapping borrowed mutably for the
    // call; MADV_POPULATE_WRITE faults the pages in as a write would and never changes
    // contents.
    unsafe {
        rustix::mm::madvise(
            at.cast(),
            end - start,
            rustix::mm::Advice::LinuxPopulateWrite,
        )
    }
    .map_err(io::Error::from)
}

/// Fresh segments of at least this many bytes are prefaulted by two threads
/// ([`populate_two_ways`]).
pub(crate) const TWO_WAY_MIN: usize = 16 << 20;
/// The bytes each thread of [`populate_two_ways`] claims at a time (whole huge pages).
const TWO_WAY_CHUNK: usize = 8 << 20;

/// Prefaults `map[start..start + len]` for writing (MADV_POPULATE_WRITE) from both ends at
/// once, when this process may run on two CPUs: this thread claims chunks from the front, a
/// helper thread from the back, until they meet. The kernel's first touch of each fresh page
/// (allocating and zeroing it, huge pages included, and mapping it) is then shared by two
/// CPUs, and the producer's fill in place runs at memcpy speed. A hint, like
/// [`populate_write`]: each thread stops at its first failure (an older kernel, memory
/// pressure), and pages not populated fault in on first write as before. Whether every chunk
/// was populated.
pub(crate) fn populate_two_ways(map: &mut MmapMut, start: usize, len: usize) -> bool {
    let Some(end) = start.checked_add(len).filter(|&e| e <= map.len()) else {
        return false;
    };
    let two_cpus = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    if len < TWO_WAY_MIN || !two_cpus {
        return false;
    }
    // The map's address, with its provenance exposed so the helper can rebuild pointers into
    // it (a raw pointer cannot cross threads).
    let base = map.as_mut_ptr().expose_provenance();
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
        // SAFETY: `start <= lo < hi <= end <= map.len()` (k < chunks), so `at .. at + (hi - lo)`
        // lies inside the map, which stays mapped: `map` is borrowed mutably until both threads
        // are joined (the scope ends before this function returns). MADV_POPULATE_WRITE faults
        // the pages in as a write would and never changes their contents, so it races with no
        // access (nobody else touches the map meanwhile).
        unsafe { rustix::mm::madvise(at.cast(), hi - lo, rustix::mm::Advice::LinuxPopulateWrite) }
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

/// `layout` over the data area `map[start..]`, read through raw accesses only.
pub(crate) fn output_view<'a, T: Element>(
    map: &'a MmapMut,
    start: usize,
    layout: Layout,
) -> stridemap::ViewResult<SharedView<'a, T>> {
    let len = map.len().saturating_sub(start);
    let start = start.min(map.len());
    // SAFETY: `start ≤ map.len()`, so the pointer stays inside (or one past) the map, and
    // `start + len ≤ map.len()`: the range is readable while the map lives, which the borrow
    // `'a` ensures. Output arrays never make a `&mut` to their data (module docs), and the
    // only writer in this process would need `&mut map`, which this borrow excludes.
    unsafe { SharedView::from_raw_parts(map.as_ptr().add(start), len, layout) }
}

/// `layout` over the data area `map[start..]`, written and read through raw accesses only.
pub(crate) fn output_view_mut<'a, T: Element>(
    map: &'a mut MmapMut,
    start: usize,
    layout: Layout,
) -> stridemap::ViewResult<SharedViewMut<'a, T>> {
    let len = map.len().saturating_sub(start);
    let start = start.min(map.len());
    // SAFETY: as in `output_view`, the range is inside the live map for `'a`; the map is
    // borrowed mutably for `'a`, so nothing else in this process reaches these bytes
    // meanwhile except through the returned view.
    unsafe { SharedViewMut::from_raw_parts(map.as_mut_ptr().add(start), len, layout) }
}
