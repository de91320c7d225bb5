//! A strided array inside a byte buffer, proven in bounds, and its sub-views.

use core::fmt;
use core::ops::Range;

use crate::error::Breach;
use crate::{LayoutError, MAX_NDIM, Order, Slice};

/// The largest buffer length and the largest array size in bytes: 2⁶³−1.
pub const MAX_BYTES: u64 = i64::MAX as u64;

/// Shape, strides and first-element offset of an array inside a buffer of `buffer_len`
/// bytes, with numpy's `as_strided` semantics.
///
/// Element (i₀, …, iₙ₋₁) starts at byte `offset + Σ iₖ·strides[k]` of the buffer. Negative
/// and zero strides, zero-length axes, 0-d arrays and offsets that are not a multiple of the
/// itemsize are all allowed. A `Layout` can only exist when every byte of every element lies
/// inside the buffer (SPEC.md rules R11, R18, R20–R22), so every operation on it — indexing,
/// iteration, slicing, transposing, reshaping — stays inside the buffer too.
///
/// ```
/// use stridemap_core::{Layout, Order, Slice};
/// // A 3×4 C-ordered f64 array, then its second column reversed.
/// let a = Layout::contiguous(8, &[3, 4], Order::C)?;
/// let col = a.index_axis(1, 1)?.slice_axis(0, Slice::REVERSED)?;
/// assert_eq!((col.shape(), col.strides(), col.offset()), (&[3][..], &[-32][..], 72));
/// assert_eq!(col.offsets().collect::<Vec<_>>(), [72, 40, 8]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: [u64; MAX_NDIM],
    strides: [i64; MAX_NDIM],
    ndim: u8,
    c_contiguous: bool,
    f_contiguous: bool,
    itemsize: u32,
    offset: u64,
    buffer_len: u64,
    len: u64,
    span: (u64, u64),
}

impl Layout {
    /// Validates a layout: `shape` and `strides` of equal length (C3) and at most 32 axes
    /// (R11), a buffer no longer than 2⁶³−1 (R18), a size that fits (R20), every stride within
    /// the buffer's length (R21) and every element inside the buffer (R22).
    ///
    /// # Errors
    /// [`LayoutError::AxisCountMismatch`], [`LayoutError::TooManyAxes`],
    /// [`LayoutError::ZeroItemsize`], [`LayoutError::BufferTooLong`],
    /// [`LayoutError::SizeOverflow`], [`LayoutError::StrideTooLarge`] or
    /// [`LayoutError::OutOfBounds`]: the first check above that fails. (A descriptor with such
    /// a layout breaks the rule [`LayoutError::rule`] names; decoding reports it as that rule's
    /// [`DecodeError`](crate::DecodeError).)
    pub fn new(
        itemsize: u32,
        shape: &[u64],
        strides: &[i64],
        offset: u64,
        buffer_len: u64,
    ) -> Result<Layout, LayoutError> {
        if shape.len() != strides.len() {
            return Err(LayoutError::AxisCountMismatch {
                shape: shape.len(),
                strides: strides.len(),
            });
        }
        if shape.len() > MAX_NDIM {
            return Err(LayoutError::TooManyAxes { ndim: shape.len() });
        }
        if itemsize == 0 {
            return Err(LayoutError::ZeroItemsize);
        }
        if buffer_len > MAX_BYTES {
            return Err(LayoutError::BufferTooLong { buffer_len });
        }
        let mut all_shape = [0u64; MAX_NDIM];
        let mut all_strides = [0i64; MAX_NDIM];
        for (slot, &d) in all_shape.iter_mut().zip(shape) {
            *slot = d;
        }
        for (slot, &s) in all_strides.iter_mut().zip(strides) {
            *slot = s;
        }
        let axes = shape.iter().copied().zip(strides.iter().copied());
        let facts = check(itemsize, axes, offset, buffer_len)?;
        Ok(Layout::from_checked(
            all_shape,
            all_strides,
            shape.len(),
            itemsize,
            offset,
            buffer_len,
            facts,
        ))
    }

    /// Assembles a layout whose parts [`check`] accepted (`ndim` ≤ 32, unused slots zero).
    pub(crate) fn from_checked(
        shape: [u64; MAX_NDIM],
        strides: [i64; MAX_NDIM],
        ndim: usize,
        itemsize: u32,
        offset: u64,
        buffer_len: u64,
        facts: Facts,
    ) -> Layout {
        Layout {
            shape,
            strides,
            ndim: ndim as u8,
            c_contiguous: facts.c_contiguous,
            f_contiguous: facts.f_contiguous,
            itemsize,
            offset,
            buffer_len,
            len: facts.len,
            span: facts.span,
        }
    }

    /// A contiguous array at offset 0 of a buffer exactly its size, with the strides numpy
    /// gives `order` (all zero when the array is empty, since they address nothing).
    ///
    /// ```
    /// use stridemap_core::{Layout, Order};
    /// assert_eq!(Layout::contiguous(8, &[2, 3], Order::F)?.strides(), &[8, 16]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`LayoutError::TooManyAxes`] for more than 32 axes, [`LayoutError::ZeroItemsize`], and
    /// [`LayoutError::SizeOverflow`] when the array's size in bytes does not fit 2⁶³−1.
    pub fn contiguous(itemsize: u32, shape: &[u64], order: Order) -> Result<Layout, LayoutError> {
        let mut strides = [0i64; MAX_NDIM];
        let strides = strides
            .get_mut(..shape.len())
            .ok_or(LayoutError::TooManyAxes { ndim: shape.len() })?;
        let nbytes = contiguous_strides(itemsize, shape, order, strides)?;
        Layout::new(itemsize, shape, strides, 0, nbytes)
    }

    /// Number of axes.
    pub const fn ndim(&self) -> usize {
        self.ndim as usize
    }

    /// Length of each axis.
    pub fn shape(&self) -> &[u64] {
        // ndim <= MAX_NDIM (checked on construction), so the range is always there.
        self.shape.get(..self.ndim()).unwrap_or_default()
    }

    /// Stride of each axis in bytes.
    pub fn strides(&self) -> &[i64] {
        self.strides.get(..self.ndim()).unwrap_or_default()
    }

    /// Byte offset of element (0, …, 0) from the buffer's start.
    pub const fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes per element.
    pub const fn itemsize(&self) -> u32 {
        self.itemsize
    }

    /// Length of the enclosing buffer.
    pub const fn buffer_len(&self) -> u64 {
        self.buffer_len
    }

    /// Number of elements.
    pub const fn len(&self) -> u64 {
        self.len
    }

    /// Whether the array has no elements (some axis has length 0).
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of data: elements times itemsize (what a contiguous copy takes).
    pub const fn nbytes(&self) -> u64 {
        // At most MAX_BYTES (R20), so this never saturates.
        self.len.saturating_mul(self.itemsize as u64)
    }

    /// The bytes the elements touch, relative to the buffer's start (empty when the array is).
    pub const fn span(&self) -> Range<u64> {
        self.span.0..self.span.1
    }

    /// Whether the elements are contiguous in C order (numpy's relaxed rule: strides of
    /// length-1 axes are ignored; empty arrays are contiguous).
    pub const fn is_c_contiguous(&self) -> bool {
        self.c_contiguous
    }

    /// Whether the elements are contiguous in Fortran order.
    pub const fn is_f_contiguous(&self) -> bool {
        self.f_contiguous
    }

    /// Whether two elements share a byte, so that a writer would alias itself (zero strides
    /// on a longer axis, or strides smaller than the itemsize). Conservative: may say yes for
    /// some layouts that do not overlap.
    pub fn may_overlap(&self) -> bool {
        if self.len <= 1 || self.c_contiguous || self.f_contiguous {
            return false;
        }
        // Sort the used axes by |stride|; each must step past everything inside it.
        let mut axes = [(0u64, 0u64); MAX_NDIM];
        let mut n = 0usize;
        for (&d, &s) in self.shape().iter().zip(self.strides()) {
            if d > 1
                && let Some(slot) = axes.get_mut(n)
            {
                *slot = (s.unsigned_abs(), d);
                n = n.saturating_add(1);
            }
        }
        let axes = axes.get_mut(..n).unwrap_or_default();
        axes.sort_unstable();
        let mut reach = u64::from(self.itemsize);
        for &(stride, d) in axes.iter() {
            if stride < reach {
                return true;
            }
            reach = stride
                .saturating_mul(d.saturating_sub(1))
                .saturating_add(reach);
        }
        false
    }

    /// Byte offset (from the buffer's start) of the element at `index`.
    ///
    /// ```
    /// use stridemap_core::{Layout, Order};
    /// let a = Layout::contiguous(4, &[2, 3], Order::C)?;
    /// assert_eq!(a.element_offset(&[1, 2])?, 20);
    /// assert!(a.element_offset(&[2, 0]).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`LayoutError::WrongAxisCount`] when `index` does not have one entry per axis,
    /// [`LayoutError::IndexOutOfRange`] when an entry is not below its axis's length.
    pub fn element_offset(&self, index: &[u64]) -> Result<u64, LayoutError> {
        if index.len() != self.ndim() {
            return Err(LayoutError::WrongAxisCount {
                expected: self.ndim(),
                got: index.len(),
            });
        }
        let mut off = self.offset as i64;
        for (axis, ((&i, &d), &s)) in index
            .iter()
            .zip(self.shape())
            .zip(self.strides())
            .enumerate()
        {
            if i >= d {
                return Err(LayoutError::IndexOutOfRange {
                    axis,
                    index: i,
                    len: d,
                });
            }
            // Every partial sum is the offset of an element, so inside [0, buffer_len).
            off = (i as i64)
                .checked_mul(s)
                .and_then(|step| off.checked_add(step))
                .ok_or(self.out_of_bounds())?;
        }
        Ok(off as u64)
    }

    /// Byte offsets of every element in logical C order (last index fastest).
    pub fn offsets(&self) -> crate::Offsets<'_> {
        crate::Offsets::new(self)
    }

    /// [`Layout::offsets`] that owns a copy of the layout, so it can outlive `self` (e.g. the
    /// iterator of a temporary view).
    pub fn into_offsets(self) -> crate::Offsets<'static> {
        crate::Offsets::new(&self)
    }

    /// The sub-array with `axis` fixed at `index` (the axis is removed), numpy's `a[..., i, ...]`.
    ///
    /// # Errors
    /// [`LayoutError::NoSuchAxis`] when `axis` is not below [`Layout::ndim`],
    /// [`LayoutError::IndexOutOfRange`] when `index` is not below the axis's length.
    pub fn index_axis(&self, axis: usize, index: u64) -> Result<Layout, LayoutError> {
        let (d, s) = self.axis(axis)?;
        if index >= d {
            return Err(LayoutError::IndexOutOfRange {
                axis,
                index,
                len: d,
            });
        }
        let offset = add_scaled(self.offset, index, s).ok_or(self.out_of_bounds())?;
        // The axis moves to the end (axis < n) and is cut off.
        let mut shape = self.shape;
        let mut strides = self.strides;
        let n = self.ndim();
        let (Some(d_tail), Some(s_tail)) = (shape.get_mut(axis..n), strides.get_mut(axis..n))
        else {
            return Err(self.no_such_axis(axis));
        };
        d_tail.rotate_left(1);
        s_tail.rotate_left(1);
        let m = n.saturating_sub(1);
        self.with(
            shape.get(..m).unwrap_or_default(),
            strides.get(..m).unwrap_or_default(),
            offset,
        )
    }

    /// The sub-array `a[..., start:stop:step, ...]` on one axis, with Python's semantics.
    ///
    /// ```
    /// use stridemap_core::{Layout, Order, Slice};
    /// let a = Layout::contiguous(8, &[1000], Order::C)?;
    /// let v = a.slice_axis(0, Slice::new(Some(500), Some(490), -1))?; // joblib's nemesis
    /// assert_eq!((v.shape(), v.strides(), v.offset()), (&[10][..], &[-8][..], 4000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`LayoutError::NoSuchAxis`] when `axis` is not below [`Layout::ndim`],
    /// [`LayoutError::ZeroStep`] for a step of 0, [`LayoutError::OutOfBounds`] when the new
    /// strides overflow `i64`.
    pub fn slice_axis(&self, axis: usize, slice: Slice) -> Result<Layout, LayoutError> {
        let (d, s) = self.axis(axis)?;
        let (start, len) = slice.indices(d)?;
        let mut shape = self.shape;
        let mut strides = self.strides;
        let (Some(d_at), Some(s_at)) = (shape.get_mut(axis), strides.get_mut(axis)) else {
            return Err(self.no_such_axis(axis));
        };
        *d_at = len;
        // With two or more elements, stride·step spans elements of this array so it fits;
        // with fewer the stride addresses nothing and the old one is kept.
        if len > 1 {
            *s_at = s.checked_mul(slice.step).ok_or(self.out_of_bounds())?;
        }
        let offset = if len > 0 {
            add_scaled(self.offset, start, s).ok_or(self.out_of_bounds())?
        } else {
            self.offset
        };
        let n = self.ndim();
        self.with(
            shape.get(..n).unwrap_or_default(),
            strides.get(..n).unwrap_or_default(),
            offset,
        )
    }

    /// The axes in a new order: axis `k` of the result is axis `axes[k]` of `self`.
    ///
    /// # Errors
    /// [`LayoutError::WrongAxisCount`] when `axes` does not have one entry per axis,
    /// [`LayoutError::NotAPermutation`] when an axis is missing, repeated or not below
    /// [`Layout::ndim`].
    pub fn permute(&self, axes: &[usize]) -> Result<Layout, LayoutError> {
        let n = self.ndim();
        if axes.len() != n {
            return Err(LayoutError::WrongAxisCount {
                expected: n,
                got: axes.len(),
            });
        }
        let mut seen = [false; MAX_NDIM];
        let mut shape = [0u64; MAX_NDIM];
        let mut strides = [0i64; MAX_NDIM];
        // axes.len() == n <= MAX_NDIM, so the zip covers every entry of `axes`.
        for (&a, (d, s)) in axes.iter().zip(shape.iter_mut().zip(strides.iter_mut())) {
            match seen.get_mut(a) {
                Some(flag) if a < n && !*flag => *flag = true,
                _ => return Err(LayoutError::NotAPermutation),
            }
            (*d, *s) = self.axis(a)?;
        }
        self.with(
            shape.get(..n).unwrap_or_default(),
            strides.get(..n).unwrap_or_default(),
            self.offset,
        )
    }

    /// The axes reversed (numpy's `.T`).
    pub fn transpose(&self) -> Layout {
        let n = self.ndim();
        let mut t = *self;
        if let Some(d) = t.shape.get_mut(..n) {
            d.reverse();
        }
        if let Some(s) = t.strides.get_mut(..n) {
            s.reverse();
        }
        core::mem::swap(&mut t.c_contiguous, &mut t.f_contiguous);
        t
    }

    /// The same elements with a new shape, read and written in `order`, when the strides
    /// allow it without copying (numpy's `reshape` when it returns a view); otherwise
    /// [`LayoutError::ReshapeNeedsCopy`].
    ///
    /// ```
    /// use stridemap_core::{Layout, Order};
    /// let a = Layout::contiguous(8, &[4, 6], Order::C)?;
    /// assert_eq!(a.reshape(&[2, 2, 6], Order::C)?.strides(), &[96, 48, 8]);
    /// assert!(a.transpose().reshape(&[24], Order::C).is_err());
    /// assert!(a.transpose().reshape(&[24], Order::F).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`LayoutError::TooManyAxes`] for more than 32 axes, [`LayoutError::ReshapeSizeMismatch`]
    /// when `shape` has another number of elements, [`LayoutError::ReshapeNeedsCopy`] when the
    /// strides cannot express the new shape (copy the elements first, e.g. into a contiguous
    /// array).
    pub fn reshape(&self, shape: &[u64], order: Order) -> Result<Layout, LayoutError> {
        if shape.len() > MAX_NDIM {
            return Err(LayoutError::TooManyAxes { ndim: shape.len() });
        }
        let to = shape.iter().try_fold(1u64, |p, &d| p.checked_mul(d));
        if to != Some(self.len) {
            return Err(LayoutError::ReshapeSizeMismatch {
                from: self.len,
                to: to.unwrap_or(u64::MAX),
            });
        }
        let too_many = LayoutError::TooManyAxes { ndim: shape.len() };
        let mut strides = [0i64; MAX_NDIM];
        let new_strides = strides.get_mut(..shape.len()).ok_or(too_many)?;
        if !self.is_empty() {
            match order {
                Order::C => reshape_strides_c(self.shape(), self.strides(), shape, new_strides)?,
                Order::F => {
                    let (mut old_d, mut old_s, mut new_d) =
                        (self.shape, self.strides, [0; MAX_NDIM]);
                    let (n, m) = (self.ndim(), shape.len());
                    let (Some(old_d), Some(old_s), Some(new_d)) =
                        (old_d.get_mut(..n), old_s.get_mut(..n), new_d.get_mut(..m))
                    else {
                        return Err(too_many);
                    };
                    old_d.reverse();
                    old_s.reverse();
                    new_d.copy_from_slice(shape);
                    new_d.reverse();
                    reshape_strides_c(old_d, old_s, new_d, new_strides)?;
                    new_strides.reverse();
                }
            }
        }
        self.with(shape, new_strides, self.offset)
    }

    /// The same buffer, a new shape, strides and offset (validated again).
    ///
    /// # Errors
    /// Those of [`Layout::new`] over this layout's buffer.
    pub fn with(&self, shape: &[u64], strides: &[i64], offset: u64) -> Result<Layout, LayoutError> {
        Layout::new(self.itemsize, shape, strides, offset, self.buffer_len)
    }

    /// The same array inside a buffer that starts `shift` bytes later and is `buffer_len`
    /// long, e.g. after mapping only part of a file.
    ///
    /// # Errors
    /// [`LayoutError::OutOfBounds`] when an element would fall outside the new buffer (it starts
    /// after the array's first byte or ends before its last), and those of [`Layout::new`].
    pub fn rebase(&self, shift: u64, buffer_len: u64) -> Result<Layout, LayoutError> {
        let offset = self.offset.checked_sub(shift).ok_or(self.out_of_bounds())?;
        Layout::new(
            self.itemsize,
            self.shape(),
            self.strides(),
            offset,
            buffer_len,
        )
    }

    fn axis(&self, axis: usize) -> Result<(u64, i64), LayoutError> {
        match (self.shape().get(axis), self.strides().get(axis)) {
            (Some(&d), Some(&s)) => Ok((d, s)),
            _ => Err(self.no_such_axis(axis)),
        }
    }

    fn no_such_axis(&self, axis: usize) -> LayoutError {
        LayoutError::NoSuchAxis {
            axis,
            ndim: self.ndim(),
        }
    }

    fn out_of_bounds(&self) -> LayoutError {
        LayoutError::OutOfBounds {
            lo: i128::from(self.span.0),
            hi: i128::from(self.span.1),
            buffer_len: self.buffer_len,
        }
    }
}

impl fmt::Debug for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layout")
            .field("shape", &self.shape())
            .field("strides", &self.strides())
            .field("offset", &self.offset)
            .field("itemsize", &self.itemsize)
            .field("buffer_len", &self.buffer_len)
            .finish()
    }
}

/// What checking a layout derives: element count, span, contiguity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Facts {
    pub(crate) len: u64,
    pub(crate) span: (u64, u64),
    pub(crate) c_contiguous: bool,
    pub(crate) f_contiguous: bool,
}

/// Rules R20, R21 and R22 for `shape` and `strides` of equal length (at most 32), an itemsize
/// of at least 1 and a buffer of at most 2⁶³−1 bytes; returns the derived facts.
#[inline]
pub(crate) fn check<A>(
    itemsize: u32,
    axes: A,
    offset: u64,
    buffer_len: u64,
) -> Result<Facts, Breach>
where
    A: DoubleEndedIterator<Item = (u64, i64)> + Clone,
{
    // One pass gathers everything; the errors are then reported in rule order.
    let mut size = Some(u64::from(itemsize));
    let mut size_overflow = None;
    let mut stride_too_large = None;
    let mut len = 1u64;
    // With R20 and R21 every extent is below 2^126 in magnitude and so is every sum, so
    // i128 cannot overflow once those rules hold (and the sums are not used otherwise).
    let (mut lo, mut hi) = (i128::from(offset), i128::from(offset));
    for (axis, (d, s)) in axes.clone().enumerate() {
        size = size
            .and_then(|z| z.checked_mul(d.max(1)))
            .filter(|&z| z <= MAX_BYTES);
        if size.is_none() && size_overflow.is_none() {
            size_overflow = Some(axis);
        }
        if s.unsigned_abs() > buffer_len && stride_too_large.is_none() {
            stride_too_large = Some((axis, s));
        }
        len = len.saturating_mul(d);
        let extent = i128::from(d.saturating_sub(1)).saturating_mul(i128::from(s));
        if extent < 0 {
            lo = lo.saturating_add(extent);
        } else {
            hi = hi.saturating_add(extent);
        }
    }
    // R20: itemsize times the product of the lengths (zero counted as one) fits in i64.
    if let Some(axis) = size_overflow {
        return Err(Breach::SizeOverflow { axis });
    }
    // R21: no stride is larger than the buffer.
    if let Some((axis, stride)) = stride_too_large {
        return Err(Breach::StrideTooLarge {
            axis,
            stride,
            buffer_len,
        });
    }
    // R22: every byte of every element is inside the buffer (nothing, if there are none).
    if len == 0 {
        (lo, hi) = (i128::from(offset), i128::from(offset));
    } else {
        // hi < 2^126 here (see above), so this never saturates.
        hi = hi.saturating_add(i128::from(itemsize));
    }
    if lo < 0 || hi > i128::from(buffer_len) {
        return Err(Breach::OutOfBounds { lo, hi, buffer_len });
    }
    Ok(Facts {
        len,
        span: (lo as u64, hi as u64),
        c_contiguous: len == 0 || is_contiguous(itemsize, axes.clone().rev()),
        f_contiguous: len == 0 || is_contiguous(itemsize, axes),
    })
}

/// Whether the axes, innermost first, are contiguous (numpy's relaxed rule: length-1 axes
/// are skipped) for a non-empty array.
fn is_contiguous(itemsize: u32, axes: impl Iterator<Item = (u64, i64)>) -> bool {
    let mut expected = i64::from(itemsize);
    for (d, s) in axes {
        if d == 1 {
            continue;
        }
        if s != expected {
            return false;
        }
        // expected stays at most the array's size, which fits in i64 (R20).
        expected = expected.saturating_mul(d as i64);
    }
    true
}

/// `base + index·stride` when it is a valid offset.
fn add_scaled(base: u64, index: u64, stride: i64) -> Option<u64> {
    let step = i64::try_from(index).ok()?.checked_mul(stride)?;
    base.checked_add_signed(step)
}

/// Fills `strides` with the contiguous strides of `shape` in `order` and returns the size in
/// bytes; all strides are zero when the array is empty. (Public callers have
/// [`Layout::contiguous`] and its `strides()`.)
pub(crate) fn contiguous_strides(
    itemsize: u32,
    shape: &[u64],
    order: Order,
    strides: &mut [i64],
) -> Result<u64, Breach> {
    if shape.len() != strides.len() {
        return Err(Breach::AxisCountMismatch {
            shape: shape.len(),
            strides: strides.len(),
        });
    }
    let mut size = u64::from(itemsize);
    let mut fill = |(axis, (&d, s)): (usize, (&u64, &mut i64))| {
        *s = size as i64;
        size = size
            .checked_mul(d.max(1))
            .filter(|&b| b <= MAX_BYTES)
            .ok_or(Breach::SizeOverflow { axis })?;
        Ok::<(), Breach>(())
    };
    match order {
        Order::C => shape
            .iter()
            .zip(strides.iter_mut())
            .enumerate()
            .rev()
            .try_for_each(&mut fill)?,
        Order::F => shape
            .iter()
            .zip(strides.iter_mut())
            .enumerate()
            .try_for_each(&mut fill)?,
    }
    if shape.contains(&0) {
        strides.fill(0);
        return Ok(0);
    }
    Ok(size)
}

/// numpy's no-copy reshape in C order (`_attempt_nocopy_reshape`) for a non-empty array:
/// groups of old axes whose product equals a group of new axes must be contiguous among
/// themselves. Length-1 axes of the result get stride 0.
fn reshape_strides_c(
    old_shape: &[u64],
    old_strides: &[i64],
    new_shape: &[u64],
    new_strides: &mut [i64],
) -> Result<(), LayoutError> {
    // Every index below stays within MAX_NDIM + 1, so the saturating steps never saturate;
    // a missing entry (which the loop conditions rule out) reads as "needs a copy".
    const NO: LayoutError = LayoutError::ReshapeNeedsCopy;
    // Drop old axes of length 1: their strides do not matter.
    let mut od = [0u64; MAX_NDIM];
    let mut os = [0i64; MAX_NDIM];
    let mut on = 0usize;
    for (&d, &s) in old_shape.iter().zip(old_strides) {
        if d != 1 {
            let (Some(dd), Some(ss)) = (od.get_mut(on), os.get_mut(on)) else {
                return Err(LayoutError::TooManyAxes {
                    ndim: old_shape.len(),
                });
            };
            (*dd, *ss) = (d, s);
            on = on.saturating_add(1);
        }
    }
    let nn = new_shape.len();
    let (mut oi, mut oj, mut ni, mut nj) = (0usize, 1usize, 0usize, 1usize);
    // Skip new length-1 axes at the front (they get stride 0 below).
    while oi < on && ni < nn {
        let mut np = *new_shape.get(ni).ok_or(NO)?;
        let mut op = *od.get(oi).ok_or(NO)?;
        while np != op {
            if np < op {
                np = np.checked_mul(*new_shape.get(nj).ok_or(NO)?).ok_or(NO)?;
                nj = nj.saturating_add(1);
            } else {
                op = op
                    .checked_mul(*od.get(oj).filter(|_| oj < on).ok_or(NO)?)
                    .ok_or(NO)?;
                oj = oj.saturating_add(1);
            }
        }
        // The old axes oi..oj must be C-contiguous among themselves: each one's stride is
        // the next inner one's length times its stride.
        let (group_d, group_s) = (od.get(oi..oj).ok_or(NO)?, os.get(oi..oj).ok_or(NO)?);
        for (wd, ws) in group_d.windows(2).zip(group_s.windows(2)) {
            if let (&[_, inner_d], &[outer_s, inner_s]) = (wd, ws)
                && (inner_d as i64).checked_mul(inner_s) != Some(outer_s)
            {
                return Err(NO);
            }
        }
        // The new axes ni..nj take strides from the innermost old axis outwards: the
        // innermost gets the innermost old stride, each outer one the stride and length of
        // the one inside it.
        let innermost = *group_s.last().ok_or(NO)?;
        let group = new_strides.get_mut(ni..nj).ok_or(NO)?;
        let lens = new_shape.get(ni..nj).ok_or(NO)?;
        let mut inner: Option<(i64, u64)> = None;
        for (s, &d) in group.iter_mut().zip(lens).rev() {
            *s = match inner {
                None => innermost,
                Some((is, id)) => is.checked_mul(id as i64).ok_or(NO)?,
            };
            inner = Some((*s, d));
        }
        ni = nj;
        nj = nj.saturating_add(1);
        oi = oj;
        oj = oj.saturating_add(1);
    }
    // Remaining new axes all have length 1 (the products matched).
    for (s, &d) in new_strides.iter_mut().zip(new_shape) {
        if d == 1 {
            *s = 0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
