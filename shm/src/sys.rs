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
