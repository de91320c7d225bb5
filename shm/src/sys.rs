//! The crate's only `unsafe` code: the producer's writable map of a segment, and prefaulting
//! it.
//!
//! Producer maps are only ever made of files this process created and sized itself (their
//! length never shrinks while mapped: named segments are deleted only under the exclusive
//! lock, memfds are sealed against shrinking), so every mapped byte stays backed.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::{MmapMut, MmapOptions};

/// The whole of `file` (`len` bytes), shared and writable; `populate` prefaults it.
pub(crate) fn map_segment(file: &File, len: usize, populate: bool) -> io::Result<MmapMut> {
    let mut opts = MmapOptions::new();
    opts.len(len);
    if populate {
        opts.populate();
    }
    // SAFETY: the file was created by this process with length ≥ `len` (set before mapping)
    // and is never shrunk while mapped (module docs); writes through a shared map are this
    // segment's purpose, and consumers only read it under the lifetime rule of SPEC.md §7.
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
    let range = map
        .get_mut(start..end)
        .ok_or_else(|| io::Error::other("range outside the segment map"))?;
    // SAFETY: `range` lies inside a live mapping borrowed mutably for the call;
    // MADV_POPULATE_WRITE faults the pages in as a write would and never changes contents.
    unsafe {
        rustix::mm::madvise(
            range.as_mut_ptr().cast(),
            range.len(),
            rustix::mm::Advice::LinuxPopulateWrite,
        )
    }
    .map_err(io::Error::from)
}
