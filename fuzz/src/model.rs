//! The naive model of a strided array: SPEC.md §1 taken literally, every element enumerated
//! with exact (i128) arithmetic, nothing clever.

use std::hint::black_box;
use std::ops::Range;

use stridemap_core::{DecodeError, Layout, MAX_BYTES};

/// Arrays with more elements than this are never enumerated: the targets keep their arrays
/// below it so that one input never takes long, and [`Geometry::verdict`] judges larger ones
/// with SPEC.md §1.2's formula.
pub const MAX_ELEMENTS: u64 = 4096;

/// Number of elements of `shape` (1 when it has no axes), exactly; `None` past `u128`.
pub fn element_count(shape: &[u64]) -> Option<u128> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape
        .iter()
        .try_fold(1u128, |n, &d| n.checked_mul(u128::from(d)))
}

/// Whether the model may enumerate an array of `shape`.
pub fn enumerable(shape: &[u64]) -> bool {
    element_count(shape).is_some_and(|n| n <= u128::from(MAX_ELEMENTS))
}

/// Calls `f` with every multi-index of `shape` in C order (last index fastest); `shape` must
/// be [`enumerable`].
pub fn for_each_index(shape: &[u64], mut f: impl FnMut(&[u64])) {
    assert!(enumerable(shape), "{shape:?} is too large to enumerate");
    if shape.contains(&0) {
        return;
    }
    let mut index = vec![0u64; shape.len()];
    loop {
        f(&index);
        let mut k = shape.len();
        loop {
            if k == 0 {
                return;
            }
            k -= 1;
            index[k] += 1;
            if index[k] < shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
}

/// Position of `index` in the C-order enumeration of `shape`.
pub fn linear(index: &[u64], shape: &[u64]) -> usize {
    index
        .iter()
        .zip(shape)
        .fold(0u64, |acc, (&i, &d)| acc * d + i) as usize
}

/// A candidate array in exact arithmetic: shape, strides and the offset of element (0, …, 0)
/// inside a buffer of `buffer_len` bytes. Unlike a [`Layout`] it may be anything, including
/// out of bounds or with strides that do not fit in 64 bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per element.
    pub itemsize: u32,
    /// Length of each axis.
    pub shape: Vec<u64>,
    /// Stride of each axis in bytes.
    pub strides: Vec<i128>,
    /// Offset of element (0, …, 0).
    pub offset: i128,
    /// Length of the enclosing buffer.
    pub buffer_len: u64,
}

impl Geometry {
    /// The geometry a layout claims to have.
    pub fn of(l: &Layout) -> Geometry {
        Geometry {
            itemsize: l.itemsize(),
            shape: l.shape().to_vec(),
            strides: l.strides().iter().map(|&s| i128::from(s)).collect(),
            offset: i128::from(l.offset()),
            buffer_len: l.buffer_len(),
        }
    }

    /// Byte offset of the element at `index`: offset + Σ iₖ·strides[k].
    pub fn element(&self, index: &[u64]) -> i128 {
        index
            .iter()
            .zip(&self.strides)
            .fold(self.offset, |acc, (&i, &s)| acc + i128::from(i) * s)
    }

    /// Offsets of every element in C order; the shape must be [`enumerable`].
    pub fn offsets(&self) -> Vec<i128> {
        let mut out = Vec::new();
        for_each_index(&self.shape, |ix| out.push(self.element(ix)));
        out
    }

    /// The same elements with the axes reversed: its C order is this array's F order.
    pub fn reversed(&self) -> Geometry {
        let mut g = self.clone();
        g.shape.reverse();
        g.strides.reverse();
        g
    }

    /// SPEC.md rules R20, R21 and R22, in that order, with the values the Rust error carries;
    /// the span when all hold. R22 enumerates the elements; only arrays with more than
    /// [`MAX_ELEMENTS`] are judged with §1.2's formula instead.
    pub fn verdict(&self) -> Result<Range<u64>, DecodeError> {
        let mut size = u128::from(self.itemsize);
        for (axis, &d) in self.shape.iter().enumerate() {
            // size ≤ 2⁶³ and d < 2⁶⁴ here, so the product fits in u128.
            size *= u128::from(d.max(1));
            if size > u128::from(MAX_BYTES) {
                return Err(DecodeError::SizeOverflow { axis });
            }
        }
        for (axis, &s) in self.strides.iter().enumerate() {
            if s.unsigned_abs() > u128::from(self.buffer_len) {
                let stride = i64::try_from(s).unwrap_or(if s < 0 { i64::MIN } else { i64::MAX });
                return Err(DecodeError::StrideTooLarge {
                    axis,
                    stride,
                    buffer_len: self.buffer_len,
                });
            }
        }
        let (lo, hi) = match element_count(&self.shape) {
            Some(0) => (self.offset, self.offset),
            _ if enumerable(&self.shape) => {
                let offsets = self.offsets();
                let lo = offsets.iter().copied().min().unwrap_or(self.offset);
                let hi = offsets.iter().copied().max().unwrap_or(self.offset);
                (lo, hi + i128::from(self.itemsize))
            }
            _ => {
                let extents = self
                    .shape
                    .iter()
                    .zip(&self.strides)
                    .map(|(&d, &s)| i128::from(d - 1) * s);
                let lo = self.offset + extents.clone().filter(|&e| e < 0).sum::<i128>();
                let hi = self.offset + extents.filter(|&e| e > 0).sum::<i128>();
                (lo, hi + i128::from(self.itemsize))
            }
        };
        if lo < 0 || hi > i128::from(self.buffer_len) {
            return Err(DecodeError::OutOfBounds {
                lo,
                hi,
                buffer_len: self.buffer_len,
            });
        }
        Ok(lo as u64..hi as u64)
    }
}

/// Whether elements at `offsets`, in some order's sequence, follow each other exactly
/// `itemsize` bytes apart: what C- (F-) contiguous means when the sequence is the C (F)
/// order. Empty arrays are contiguous.
pub fn is_contiguous_sequence(offsets: &[i128], itemsize: u32) -> bool {
    offsets
        .windows(2)
        .all(|w| w[1] - w[0] == i128::from(itemsize))
}

/// Checks every claim `l` makes against the model of its own geometry, with `buffer` (exactly
/// the layout's buffer) as the memory: each element's bytes are read by plain slice indexing,
/// through `offsets()`, through `fold` and through `fold` resumed after a partial walk, so a
/// stray offset panics; the offsets, `element_offset`, span, len, nbytes, contiguity and the
/// no-overlap claim all agree with the model. The shape must be [`enumerable`].
pub fn check_layout(l: &Layout, buffer: &[u8]) {
    assert_eq!(
        buffer.len() as u64,
        l.buffer_len(),
        "the buffer is the layout's"
    );
    let g = Geometry::of(l);
    // A layout exists only when the model finds it valid, with the same span.
    assert_eq!(g.verdict(), Ok(l.span()), "{l:?}");
    let want = g.offsets();
    let itemsize = l.itemsize() as usize;
    let read = |off: u64| {
        let start = off as usize;
        black_box(&buffer[start..start + itemsize]);
    };

    let got: Vec<u64> = l.offsets().inspect(|&o| read(o)).collect();
    let got_wide: Vec<i128> = got.iter().map(|&o| i128::from(o)).collect();
    assert_eq!(got_wide, want, "offsets() of {l:?}");
    let folded = l.offsets().fold(Vec::new(), |mut v, o| {
        read(o);
        v.push(o);
        v
    });
    assert_eq!(folded, got, "fold of {l:?}");
    let mut it = l.offsets();
    let k = got.len() / 3;
    let mut resumed: Vec<u64> = it.by_ref().take(k).collect();
    assert_eq!(it.len(), got.len() - k, "size_hint of {l:?}");
    resumed.extend(it.fold(Vec::new(), |mut v, o| {
        read(o);
        v.push(o);
        v
    }));
    assert_eq!(resumed, got, "fold after next of {l:?}");

    let mut want_at = got.iter();
    for_each_index(l.shape(), |index| {
        let o = want_at.next().copied();
        assert_eq!(l.element_offset(index).ok(), o, "{l:?} at {index:?}");
    });
    if let Some(&d0) = l.shape().first() {
        let mut past = vec![0u64; l.ndim()];
        past[0] = d0;
        assert_eq!(
            l.element_offset(&past),
            Err(stridemap_core::LayoutError::IndexOutOfRange {
                axis: 0,
                index: d0,
                len: d0
            })
        );
    }

    assert_eq!(l.len(), want.len() as u64);
    assert_eq!(l.is_empty(), want.is_empty());
    assert_eq!(l.nbytes(), want.len() as u64 * u64::from(l.itemsize()));
    assert_eq!(
        l.is_c_contiguous(),
        is_contiguous_sequence(&want, l.itemsize()),
        "C contiguity of {l:?}"
    );
    assert_eq!(
        l.is_f_contiguous(),
        is_contiguous_sequence(&g.reversed().offsets(), l.itemsize()),
        "F contiguity of {l:?}"
    );
    if !l.may_overlap() {
        let mut sorted = got;
        sorted.sort_unstable();
        for w in sorted.windows(2) {
            assert!(
                w[1] >= w[0] + u64::from(l.itemsize()),
                "{l:?} claims no overlap"
            );
        }
    }
}

/// Whether a layout error reports the same broken check, with the same data, as the
/// descriptor error the model states for it (the checks layouts and descriptors share).
pub fn same_check(l: &stridemap_core::LayoutError, d: &DecodeError) -> bool {
    use stridemap_core::LayoutError as L;
    match (*l, *d) {
        (
            L::AxisCountMismatch { shape, strides },
            DecodeError::AxisCountMismatch {
                shape: a,
                strides: b,
            },
        ) => (shape, strides) == (a, b),
        (L::TooManyAxes { ndim }, DecodeError::TooManyAxes { ndim: a }) => ndim == a,
        (
            L::BufferTooLong { buffer_len },
            DecodeError::BufferOverflow {
                buffer_offset: 0,
                buffer_len: a,
            },
        ) => buffer_len == a,
        (L::SizeOverflow { axis }, DecodeError::SizeOverflow { axis: a }) => axis == a,
        (
            L::StrideTooLarge {
                axis,
                stride,
                buffer_len,
            },
            DecodeError::StrideTooLarge {
                axis: a,
                stride: b,
                buffer_len: c,
            },
        ) => (axis, stride, buffer_len) == (a, b, c),
        (
            L::OutOfBounds { lo, hi, buffer_len },
            DecodeError::OutOfBounds {
                lo: a,
                hi: b,
                buffer_len: c,
            },
        ) => (lo, hi, buffer_len) == (a, b, c),
        _ => false,
    }
}
