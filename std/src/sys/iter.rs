//! Mutable element iteration over a non-overlapping strided layout of borrowed memory, and the
//! raw-pointer constructors of the volatile views.

use std::marker::PhantomData;
use std::ptr::NonNull;

use stridemap_core::Layout;

use super::{VolatileBytes, VolatileBytesMut, slots};

/// The elements of a non-overlapping strided layout over `elems`, as `&mut T` in logical C
/// order: an odometer over the indices, each visited once.
#[derive(Debug)]
pub(crate) struct IterMut<'a, T> {
    ptr: NonNull<T>,
    len: usize,
    /// Per axis: length and stride in slots ([`Slots`](super::split::Slots)).
    axes: Vec<(usize, isize)>,
    index: Vec<usize>,
    /// The slot of the element at `index`.
    at: isize,
    /// Elements not yet handed out.
    left: usize,
    _life: PhantomData<&'a mut [T]>,
}

/// `None` if [`slots`] refuses `layout` over `elems` or two of its elements may share a slot
/// ([`Slots::distinct`](super::split::Slots::distinct): they would alias).
pub(crate) fn iter_mut<'a, T>(elems: &'a mut [T], layout: &Layout) -> Option<IterMut<'a, T>> {
    let slots = slots(layout, size_of::<T>(), elems.len())?;
    if !slots.distinct() {
        return None;
    }
    Some(IterMut {
        ptr: NonNull::new(elems.as_mut_ptr()).unwrap_or(NonNull::dangling()),
        len: elems.len(),
        index: vec![0; slots.axes.len()],
        at: isize::try_from(slots.first).ok()?,
        left: slots.count,
        axes: slots.axes,
        _life: PhantomData,
    })
}

impl<'a, T> Iterator for IterMut<'a, T> {
    type Item = &'a mut T;

    fn next(&mut self) -> Option<&'a mut T> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let slot = usize::try_from(self.at).ok().filter(|&s| s < self.len)?;
        // The next index in C order; the slot follows it (wrapping arithmetic: a wrong value
        // is only ever refused by the check above).
        for (i, &(d, s)) in self.index.iter_mut().zip(&self.axes).rev() {
            *i += 1;
            if *i < d {
                self.at = self.at.wrapping_add(s);
                break;
            }
            *i = 0;
            self.at = self
                .at
                .wrapping_sub(s.wrapping_mul((d as isize).wrapping_sub(1)));
        }
        // SAFETY: `slot < len` (checked just above), so the element is inside `elems`, which
        // is borrowed mutably for 'a. `slot` is `first + Σ iₖ·strideₖ` for the current index
        // (kept so by the odometer), each index is visited once (`left` counts them), and
        // `Slots::distinct` (checked in `iter_mut`) makes that sum one to one, so no two
        // `&mut` handed out alias. Zero-sized `T` is refused by `slots`.
        Some(unsafe { &mut *self.ptr.as_ptr().add(slot) })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

impl<'a, T: crate::Element> crate::VolatileView<'a, T> {
    /// A volatile view of `layout` over `len` bytes at `ptr` that something else may change
    /// (e.g. a producer's own map of an `r+` output that consumers write).
    ///
    /// # Safety
    /// `ptr .. ptr + len` is readable for all of `'a` (e.g. a map that outlives `'a`), and
    /// this process makes no `&mut` reference to those bytes during `'a`.
    ///
    /// # Errors
    /// As [`VolatileView::new`](crate::VolatileView::new).
    pub unsafe fn from_raw_parts(
        ptr: *const u8,
        len: usize,
        layout: Layout,
    ) -> crate::ViewResult<crate::VolatileView<'a, T>> {
        // SAFETY: the caller's promise (readable for 'a) is `from_raw_parts`'s contract.
        let bytes = unsafe { VolatileBytes::from_raw_parts(ptr, len) };
        crate::VolatileView::with_source(bytes, layout, None)
    }
}

impl<'a, T: crate::Element> crate::VolatileViewMut<'a, T> {
    /// A writable volatile view of `layout` over `len` bytes at `ptr` that other processes
    /// may read and write meanwhile (a producer's own map of an `r+` output).
    ///
    /// # Safety
    /// `ptr .. ptr + len` is readable and writable for all of `'a`, and no reference to those
    /// bytes is used during `'a`. Raw accesses elsewhere (other processes, other maps or raw
    /// views in this one) may change them meanwhile: the view then reads other values, and
    /// elements written at once by two writers may be torn, never undefined behaviour.
    ///
    /// # Errors
    /// As [`VolatileViewMut::new`](crate::VolatileViewMut::new).
    pub unsafe fn from_raw_parts(
        ptr: *mut u8,
        len: usize,
        layout: Layout,
    ) -> crate::ViewResult<crate::VolatileViewMut<'a, T>> {
        // SAFETY: the caller's promise (readable and writable for 'a, no reference in use)
        // is `from_raw_parts`'s contract.
        let bytes = unsafe { VolatileBytesMut::from_raw_parts(ptr, len) };
        crate::VolatileViewMut::with_source(bytes, layout, None)
    }
}
