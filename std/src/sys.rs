//! The crate's only `unsafe` code: mapping a file's bytes into memory (and, with the
//! `ndarray` feature, handing them to ndarray as raw pointers).
//!
//! Mapping a file is unsafe in Rust because the bytes can change, or the file can shrink,
//! behind the program's back. What stridemap checks before it maps (SPEC.md §6): the file is
//! a regular file as long as the descriptor says (so every mapped byte exists when mapped);
//! fd-passed files are sealed against shrinking (`F_SEAL_SHRINK`); named segments are never
//! shrunk by their producers and are locked while mapped (SPEC.md §7). What remains is the
//! producer's contract, stated in the README's trust model: a hostile producer that can
//! truncate a path-named file after it was mapped can make a reader fault (SIGBUS), and one
//! that writes the bytes of a read-only segment changes what readers see.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapMut, MmapOptions};

/// `[offset, offset + len)` of `file`, shared and read-only (`MAP_SHARED`, `PROT_READ`).
pub(crate) fn map_read(file: &File, offset: u64, len: usize) -> io::Result<Mmap> {
    // SAFETY: the caller checked that the file is a regular file at least `offset + len`
    // bytes long (O6, O7), so the whole range is backed when mapped. Later changes by other
    // processes are the producer's contract (module docs); the map is never written through.
    unsafe { MmapOptions::new().offset(offset).len(len).map(file) }
}

/// `[offset, offset + len)` of `file`, shared and writable (`MAP_SHARED`): writes reach the
/// file and every other process mapping it.
pub(crate) fn map_write(file: &File, offset: u64, len: usize) -> io::Result<MmapMut> {
    // SAFETY: as for `map_read`; the descriptor and the caller both asked for `r+`, so both
    // sides expect writes through this map (O5).
    unsafe { MmapOptions::new().offset(offset).len(len).map_mut(file) }
}

/// `[offset, offset + len)` of `file`, private copy-on-write (`MAP_PRIVATE`): writes stay in
/// this process.
pub(crate) fn map_private(file: &File, offset: u64, len: usize) -> io::Result<MmapMut> {
    // SAFETY: as for `map_read`; writes go to private copies of the pages, never the file.
    unsafe { MmapOptions::new().offset(offset).len(len).map_copy(file) }
}

#[cfg(feature = "ndarray")]
pub(crate) use self::array::{array_view, array_view_mut};

#[cfg(feature = "ndarray")]
mod array {
    use ndarray::{ArrayViewD, ArrayViewMutD, Axis, IxDyn, ShapeBuilder};
    use stridemap_core::Layout;

    /// Shape, non-negative element strides, and the offset (in elements) of the element with
    /// the lowest address, plus the axes to invert afterwards to restore negative strides.
    struct Plan {
        shape: Vec<usize>,
        strides: Vec<usize>,
        lowest: usize,
        invert: Vec<usize>,
    }

    fn plan(layout: &Layout, size: usize) -> Option<Plan> {
        let mut shape = Vec::with_capacity(layout.ndim());
        let mut strides = Vec::with_capacity(layout.ndim());
        let mut invert = Vec::new();
        for (k, (&d, &s)) in layout.shape().iter().zip(layout.strides()).enumerate() {
            shape.push(usize::try_from(d).ok()?);
            // Axes of length 0 or 1 never move the pointer; their stride may not be a
            // multiple of the element size, and does not matter.
            let s = if d > 1 { s } else { 0 };
            strides.push(usize::try_from(s.unsigned_abs()).ok()? / size);
            if s < 0 {
                invert.push(k);
            }
        }
        let lowest = usize::try_from(layout.span().start).ok()? / size;
        let lowest = if layout.is_empty() {
            usize::try_from(layout.offset()).ok()? / size
        } else {
            lowest
        };
        Some(Plan {
            shape,
            strides,
            lowest,
            invert,
        })
    }

    /// `layout` over `elems` as an ndarray view. `None` if a length does not fit `usize`.
    ///
    /// The caller guarantees what the typed views guarantee: every element offset of `layout`
    /// is a multiple of `size_of::<T>()` and lies inside `elems` (a valid, aligned layout).
    pub(crate) fn array_view<'a, T>(elems: &'a [T], layout: &Layout) -> Option<ArrayViewD<'a, T>> {
        let p = plan(layout, std::mem::size_of::<T>())?;
        if p.lowest > elems.len() {
            return None;
        }
        // SAFETY: `lowest` ≤ len, so the pointer is in bounds or one past the end (only for an
        // empty array). With the non-negative strides every element address is `lowest +
        // Σ iₖ·strideₖ`, which is the lowest element plus a distance inside the layout's span,
        // hence inside `elems` (the layout is valid and its offsets are whole slots); the
        // slice is borrowed for 'a and never mutated through this view. The span is at most
        // 2^63 bytes, so no offset overflows isize.
        let mut view = unsafe {
            ArrayViewD::from_shape_ptr(
                IxDyn(&p.shape).strides(IxDyn(&p.strides)),
                elems.as_ptr().add(p.lowest),
            )
        };
        for k in p.invert {
            view.invert_axis(Axis(k));
        }
        Some(view)
    }

    /// `layout` over `elems` as a mutable ndarray view. The caller also guarantees that no two
    /// elements of `layout` share a slot (`!layout.may_overlap()`).
    pub(crate) fn array_view_mut<'a, T>(
        elems: &'a mut [T],
        layout: &Layout,
    ) -> Option<ArrayViewMutD<'a, T>> {
        let p = plan(layout, std::mem::size_of::<T>())?;
        if p.lowest > elems.len() || layout.may_overlap() {
            return None;
        }
        // SAFETY: as in `array_view`, every element lies inside `elems`; the slice is
        // borrowed mutably for 'a, so nothing else aliases it, and the elements are distinct
        // (checked above), so the view's `&mut` elements never alias each other.
        let mut view = unsafe {
            ArrayViewMutD::from_shape_ptr(
                IxDyn(&p.shape).strides(IxDyn(&p.strides)),
                elems.as_mut_ptr().add(p.lowest),
            )
        };
        for k in p.invert {
            view.invert_axis(Axis(k));
        }
        Some(view)
    }
}
