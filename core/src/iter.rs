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
/// # Ok::<(), Box<dyn std::error::Error>>(())
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
    ///
    /// The arithmetic wraps explicitly but never wraps in fact: every offset it reaches is an
    /// element's offset, in `[0, i64::MAX]` (see `next`), and `index[k] < shape[k]`.
    fn advance(&mut self) {
        let shape = self.layout.shape();
        let strides = self.layout.strides();
        let Some(index) = self.index.get_mut(..shape.len()) else {
            return;
        };
        for ((i, &len), &stride) in index.iter_mut().zip(shape).zip(strides).rev() {
            if i.wrapping_add(1) < len {
                *i = i.wrapping_add(1);
                self.next = self.next.wrapping_add(stride);
                return;
            }
            self.next = self.next.wrapping_sub((*i as i64).wrapping_mul(stride));
            *i = 0;
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
        self.remaining = self.remaining.saturating_sub(1);
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
        // The last axis; `n > 0` here. The arithmetic wraps explicitly but never wraps in
        // fact (see `advance`): `index[n - 1] < len`, `row ≤ remaining`, and every offset
        // reached is an element's.
        let last = n.wrapping_sub(1);
        let (Some(&len), Some(&stride)) = (
            self.layout.shape().get(last),
            self.layout.strides().get(last),
        ) else {
            return acc;
        };
        while self.remaining > 0 {
            let Some(&at) = self.index.get(last) else {
                return acc;
            };
            // The rest of the current row, in one tight loop.
            let row = len.wrapping_sub(at).min(self.remaining);
            let base = self.next;
            for i in 0..row as i64 {
                acc = f(acc, base.wrapping_add(i.wrapping_mul(stride)) as u64);
            }
            self.remaining = self.remaining.wrapping_sub(row);
            if self.remaining == 0 {
                break;
            }
            self.next = base.wrapping_add((row as i64).wrapping_sub(1).wrapping_mul(stride));
            if let Some(i) = self.index.get_mut(last) {
                *i = at.wrapping_add(row).wrapping_sub(1);
            }
            self.advance();
        }
        acc
    }
}

impl ExactSizeIterator for Offsets<'_> {}

impl core::iter::FusedIterator for Offsets<'_> {}
