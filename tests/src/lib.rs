//! Shared helpers for stridemap's cross-crate tests: the conformance vectors and the
//! re-executing child-process harness.

pub mod child;
pub mod python;
pub mod vectors;

/// Tries a shared writable map of `file` (for tests that check the kernel refuses one).
pub fn try_map_shared_writable(file: &std::fs::File) -> std::io::Result<()> {
    let len = file.metadata()?.len().max(1) as usize;
    // SAFETY: the map is dropped at once and never read or written; only whether the kernel
    // grants it is of interest.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(file) };
    map.map(drop)
}
