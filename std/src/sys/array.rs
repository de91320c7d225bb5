//! Handing mapped bytes to ndarray as raw-pointer views (the `ndarray` feature): the unsafe
//! half of `crate::ndarray`.

use ndarray::{ArrayViewD, ArrayViewMutD, Axis, IxDyn, ShapeBuilder};
use stridemap_core::Layout;

/// Shape, non-negative element strides, and the checked slots ([`super::split::Slots`]), plus
/// the axes to invert afterwards to restore negative strides.
struct Plan {
    shape: Vec<usize>,
    strides: Vec<usize>,
    lowest: usize,
    invert: Vec<usize>,
}

/// `None` unless [`super::slots`] accepts `layout` over `len` slots and the product of
/// the non-zero lengths fits `isize` (ndarray's requirement), and, if `distinct`, unless
/// [`super::split::Slots::distinct`] holds.
fn plan(layout: &Layout, size: usize, len: usize, distinct: bool) -> Option<Plan> {
    let slots = super::slots(layout, size, len)?;
    if distinct && !slots.distinct() {
        return None;
    }
    let mut product = 1usize;
    for &(d, _) in &slots.axes {
        product = product.checked_mul(d.max(1))?;
    }
    isize::try_from(product.checked_mul(size)?).ok()?;
    if slots.count == 0 {
        // No element: C-order strides over the lengths (0 taken as 1), which reach no
        // slot but satisfy ndarray's checks of strides.
        let shape: Vec<usize> = slots.axes.iter().map(|&(d, _)| d).collect();
        let mut strides = vec![0; shape.len()];
        let mut step = 1usize;
        for (s, &d) in strides.iter_mut().zip(&shape).rev() {
            *s = step;
            step = step.checked_mul(d.max(1))?;
        }
        return Some(Plan {
            shape,
            strides,
            lowest: slots.first,
            invert: Vec::new(),
        });
    }
    let mut invert = Vec::new();
    for (k, &(_, s)) in slots.axes.iter().enumerate() {
        if s < 0 {
            invert.push(k);
        }
    }
    Some(Plan {
        shape: slots.axes.iter().map(|&(d, _)| d).collect(),
        strides: slots.axes.iter().map(|&(_, s)| s.unsigned_abs()).collect(),
        lowest: slots.lowest,
        invert,
    })
}

/// `layout` over `elems` as an ndarray view. `None` if a length does not fit `usize`, an
/// offset is not a whole element, or an element lies outside `elems`.
pub(crate) fn array_view<'a, T>(elems: &'a [T], layout: &Layout) -> Option<ArrayViewD<'a, T>> {
    let p = plan(layout, std::mem::size_of::<T>(), elems.len(), false)?;
    // SAFETY: `slots` (checked arithmetic, in this module) found every element's slot
    // `first + Σ iₖ·sₖ` inside `lowest ..= highest`, with `highest < len` and `lowest ≥
    // 0` when there are elements (else `lowest = first ≤ len`, and nothing is reached). With
    // the non-negative strides |sₖ| from slot `lowest`, ndarray reaches `lowest + Σ
    // iₖ·|sₖ| ≤ lowest + Σ (dₖ−1)·|sₖ| = highest`, and inverting an axis keeps each
    // element in that set: every element is a `T` of `elems`, whose byte size fits
    // isize; the product of the lengths fits isize (checked in `plan`). The slice is
    // borrowed for 'a and nothing mutates it through this view.
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

/// `layout` over `elems` as a mutable ndarray view; `None` also when two elements of
/// `layout` may share a slot.
pub(crate) fn array_view_mut<'a, T>(
    elems: &'a mut [T],
    layout: &Layout,
) -> Option<ArrayViewMutD<'a, T>> {
    let p = plan(layout, std::mem::size_of::<T>(), elems.len(), true)?;
    // SAFETY: as in `array_view`, every element is a `T` of `elems`; `elems` is borrowed
    // mutably for 'a, so nothing else aliases it, and no two elements share a slot
    // (`Slots::distinct`, checked in `plan`), so the view's `&mut` elements never alias.
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
