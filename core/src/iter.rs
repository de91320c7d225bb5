//! Iteration over the byte offsets of a layout's elements in logical C order.

use crate::{Layout, MAX_NDIM};

/// The byte offsets of a [`Layout`]'s elements, last index fastest.
///
/// `fold` (and so `sum`, `for_each`, …) runs a tight loop along the last axis, which is what
/// makes strided reductions fast.
///
/// ```
/// use stridemap_core::{Layout, Order};
/// let t = Layout::contiguous(1, &[2, 3], Order::C)?.transpose();
/// assert_eq!(t.offsets().collect::<Vec<_>>(), [0, 3, 1, 4, 2, 5]);
/// # Ok::<(), stridemap_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Offsets<'a> {
    /// A copy (a layout is plain data), so an iterator can outlive the layout it came from.
    layout: Layout,
    _from: core::marker::PhantomData<&'a Layout>,
    index: [u64; MAX_NDIM],
    /// Offset of the element at `index`; every element's offset lies in
    /// `[0, buffer_len) ⊂ [0, i64::MAX]`, so the arithmetic below cannot overflow.
    next: i64,
    remaining: u64,
}

impl<'a> Offsets<'a> {
    pub(crate) fn new(layout: &Layout) -> Offsets<'a> {
        Offsets {
            layout: *layout,
            _from: core::marker::PhantomData,
            index: [0; MAX_NDIM],
            next: layout.offset() as i64,
            remaining: layout.len(),
        }
    }

    /// Moves `index` and `next` to the following element in C order (a carry from the last
    /// axis); only called while another element remains.
    fn advance(&mut self) {
        let shape = self.layout.shape();
        let strides = self.layout.strides();
        for k in (0..shape.len()).rev() {
            if self.index[k] + 1 < shape[k] {
                self.index[k] += 1;
                self.next += strides[k];
                return;
            }
            self.next -= (self.index[k] as i64) * strides[k];
            self.index[k] = 0;
        }
    }
}

impl Iterator for Offsets<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.remaining == 0 {
            return None;
        }
        let current = self.next as u64;
        self.remaining -= 1;
        if self.remaining > 0 {
            self.advance();
        }
        Some(current)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, usize::try_from(self.remaining).ok())
    }

    fn fold<B, F>(mut self, init: B, mut f: F) -> B
    where
        F: FnMut(B, u64) -> B,
    {
        let mut acc = init;
        let n = self.layout.ndim();
        if n == 0 {
            return if self.remaining > 0 {
                f(acc, self.next as u64)
            } else {
                acc
            };
        }
        let (len, stride) = (self.layout.shape()[n - 1], self.layout.strides()[n - 1]);
        while self.remaining > 0 {
            // The rest of the current row, in one tight loop.
            let row = (len - self.index[n - 1]).min(self.remaining);
            let base = self.next;
            for i in 0..row as i64 {
                acc = f(acc, (base + i * stride) as u64);
            }
            self.remaining -= row;
            if self.remaining == 0 {
                break;
            }
            self.next = base + (row as i64 - 1) * stride;
            self.index[n - 1] += row - 1;
            self.advance();
        }
        acc
    }
}

impl ExactSizeIterator for Offsets<'_> {}

impl core::iter::FusedIterator for Offsets<'_> {}
