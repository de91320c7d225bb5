//! Iteration over a typed view's elements in logical C order.

use core::mem::size_of;
use core::slice;

use stridemap_core::{Layout, Offsets};

/// The elements of a [`View`](super::View) in logical C order.
///
/// Contiguous views iterate their slice; strided ones walk the layout's offsets. `fold` (and
/// so `sum`, `for_each`, `collect`, …) forwards to the inner iterator's `fold`, which runs a
/// tight loop along the last axis.
#[derive(Clone, Debug)]
pub struct Iter<'a, T> {
    inner: Inner<'a, T>,
}

#[derive(Clone, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "an iterator lives on the stack; boxing would allocate per iteration"
)]
enum Inner<'a, T> {
    Contiguous(slice::Iter<'a, T>),
    Strided {
        elems: &'a [T],
        offsets: Offsets<'static>,
    },
}

impl<'a, T> Iter<'a, T> {
    pub(super) fn contiguous(s: &'a [T]) -> Self {
        Iter {
            inner: Inner::Contiguous(s.iter()),
        }
    }

    pub(super) fn strided(elems: &'a [T], layout: &Layout) -> Self {
        Iter {
            inner: Inner::Strided {
                elems,
                offsets: layout.into_offsets(),
            },
        }
    }
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    #[inline]
    fn next(&mut self) -> Option<&'a T> {
        match &mut self.inner {
            Inner::Contiguous(it) => it.next(),
            // A layout's elements lie inside its buffer, so `get` always finds the slot.
            Inner::Strided { elems, offsets } => {
                let off = offsets.next()?;
                elems.get((off / size_of::<T>() as u64) as usize)
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.inner {
            Inner::Contiguous(it) => it.size_hint(),
            Inner::Strided { offsets, .. } => offsets.size_hint(),
        }
    }

    #[inline]
    fn fold<B, F>(self, init: B, mut f: F) -> B
    where
        F: FnMut(B, &'a T) -> B,
    {
        match self.inner {
            Inner::Contiguous(it) => it.fold(init, f),
            Inner::Strided { elems, offsets } => offsets.fold(init, |acc, off| {
                match elems.get((off / size_of::<T>() as u64) as usize) {
                    Some(e) => f(acc, e),
                    None => acc,
                }
            }),
        }
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}
impl<T> core::iter::FusedIterator for Iter<'_, T> {}
