//! Views of bytes another process may change: elements copied in and out one volatile access
//! at a time, never lent as references ([`VolatileView`], [`VolatileViewMut`]).

use core::marker::PhantomData;
use core::mem::size_of;

use stridemap_core::{Layout, ValidDescriptor};

use super::typed::check;
use super::{describe, subviews};
use crate::sys::{VolatileBytes, VolatileBytesMut, split_disjoint, split_ranges};
use crate::{Element, ViewError, ViewError as Error, ViewResult as Result};

/// A read-only strided view of `T`s that other processes may write while it lives (an `r+`
/// output, a path-named file): every read copies one element, no `&T` is ever made.
///
/// Made by [`Mapping::volatile_view`](crate::Mapping::volatile_view) for any mapping, or from a
/// [`View`](crate::View) with [`View::as_volatile`](crate::View::as_volatile). Sub-views, iteration
/// and copies work as on a [`View`](crate::View); elements come by value.
///
/// ```
/// use stridemap::{Layout, Order, VolatileView};
/// let data: Vec<f64> = (0..6).map(f64::from).collect();
/// let v = VolatileView::<f64>::new(bytemuck::cast_slice(&data), Layout::contiguous(8, &[2, 3], Order::C)?)?;
/// assert_eq!(v.get(&[1, 2])?, 5.0);
/// assert_eq!(v.t().iter().sum::<f64>(), 15.0);
/// # Ok::<(), stridemap::Error>(())
/// ```
///
/// It lends no references, so this does not compile:
///
/// ```compile_fail,E0308
/// # use stridemap::{Layout, Order, VolatileView};
/// # let data = [1.0f64; 4];
/// let v = VolatileView::<f64>::new(bytemuck::cast_slice(&data), Layout::contiguous(8, &[4], Order::C)?)?;
/// let r: &f64 = v.get(&[0])?; // elements come by value
/// # Ok::<(), stridemap::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct VolatileView<'a, T> {
    bytes: VolatileBytes<'a>,
    layout: Layout,
    source: Option<&'a ValidDescriptor>,
    _t: PhantomData<fn() -> T>,
}

/// A writable strided view of `T`s that other processes may read and write while it lives:
/// the safe way for workers to fill disjoint parts of one shared `r+` output.
///
/// Writes are single volatile stores ([`set`](VolatileViewMut::set),
/// [`fill`](VolatileViewMut::fill), [`for_each_mut`](VolatileViewMut::for_each_mut)) or one copy
/// of a contiguous run ([`copy_from_slice`](VolatileViewMut::copy_from_slice)). Within a
/// process the view is the only writer of its elements: it is not `Clone`, sub-views consume
/// it, and [`split_axis`](VolatileViewMut::split_axis) / [`axis_chunks`](VolatileViewMut::axis_chunks)
/// hand out disjoint parts that can go to different threads.
///
/// ```
/// use stridemap::{Layout, Order, VolatileViewMut};
/// let mut data = vec![0.0f64; 6];
/// let v = VolatileViewMut::<f64>::new(bytemuck::cast_slice_mut(&mut data), Layout::contiguous(8, &[2, 3], Order::C)?)?;
/// let (mut top, mut bottom) = v.split_axis(0, 1)?;
/// std::thread::scope(|s| {
///     s.spawn(move || top.copy_from_slice(&[1.0, 2.0, 3.0]));
///     s.spawn(move || bottom.fill(9.0));
/// });
/// assert_eq!(data, [1.0, 2.0, 3.0, 9.0, 9.0, 9.0]);
/// # Ok::<(), stridemap::Error>(())
/// ```
///
/// Two writers of the same elements cannot be made: it is not `Clone` (nor `Sync`).
///
/// ```compile_fail,E0599
/// # use stridemap::{Layout, Order, VolatileViewMut};
/// # let mut data = vec![0.0f64; 6];
/// let v = VolatileViewMut::<f64>::new(bytemuck::cast_slice_mut(&mut data), Layout::contiguous(8, &[6], Order::C)?)?;
/// let w = v.clone();
/// # Ok::<(), stridemap::Error>(())
/// ```
///
/// Nor shared between threads by reference (it is `Send`, not `Sync`): threads get disjoint
/// parts instead.
///
/// ```compile_fail,E0277
/// fn sync<S: Sync>() {}
/// sync::<stridemap::VolatileViewMut<'static, f64>>();
/// ```
pub struct VolatileViewMut<'a, T> {
    bytes: VolatileBytesMut<'a>,
    layout: Layout,
    source: Option<&'a ValidDescriptor>,
    _t: PhantomData<fn() -> T>,
}

fn usize_off(off: u64) -> usize {
    usize::try_from(off).unwrap_or(usize::MAX)
}

/// Error for an element the layout accepted but the buffer does not hold: impossible, since a
/// view's layout is checked against its buffer; reported rather than panicking.
fn outside(layout: &Layout, len: usize) -> Error {
    Error::Layout(stridemap_core::LayoutError::OutOfBounds {
        lo: i128::from(layout.span().start),
        hi: i128::from(layout.span().end),
        buffer_len: len as u64,
    })
}

impl<'a, T: Element> VolatileView<'a, T> {
    /// A volatile view of `layout` over `bytes` (its buffer: at least the bytes its elements
    /// touch), for code that takes volatile views.
    ///
    /// # Errors
    /// [`ViewError::BufferTooShort`], [`ViewError::ItemsizeMismatch`], [`ViewError::Misaligned`].
    pub fn new(bytes: &'a [u8], layout: Layout) -> Result<VolatileView<'a, T>> {
        VolatileView::with_source(VolatileBytes::from_slice(bytes), layout, None)
    }

    pub(crate) fn with_source(
        bytes: VolatileBytes<'a>,
        layout: Layout,
        source: Option<&'a ValidDescriptor>,
    ) -> Result<VolatileView<'a, T>> {
        check::<T>(bytes.addr(), bytes.len(), &layout)?;
        Ok(VolatileView {
            bytes,
            layout,
            source,
            _t: PhantomData,
        })
    }

    /// A view whose layout was checked against these bytes already (e.g. a `View`'s).
    pub(crate) fn checked(
        bytes: VolatileBytes<'a>,
        layout: Layout,
        source: Option<&'a ValidDescriptor>,
    ) -> VolatileView<'a, T> {
        VolatileView {
            bytes,
            layout,
            source,
            _t: PhantomData,
        }
    }

    fn with_layout(self, layout: Layout) -> Result<Self> {
        check::<T>(self.bytes.addr(), self.bytes.len(), &layout)?;
        Ok(VolatileView { layout, ..self })
    }

    /// The element at `index` (one entry per axis), copied.
    ///
    /// # Errors
    /// A [`ViewError::Layout`] error (wrong axis count, index out of range).
    pub fn get(&self, index: &[usize]) -> Result<T> {
        let off = self.layout.element_offset(super::as_u64s(index))?;
        self.bytes
            .read(usize_off(off))
            .ok_or_else(|| outside(&self.layout, self.bytes.len()))
    }

    /// The elements in logical C order, copied one by one.
    pub fn iter(&self) -> VolatileIter<'a, T> {
        VolatileIter::new(self.bytes, &self.layout)
    }

    /// A C-ordered copy of the elements.
    pub fn to_vec(&self) -> Vec<T> {
        let mut out = vec![T::zeroed(); self.len()];
        // The lengths agree, so this cannot fail.
        let _ = self.copy_to_slice(&mut out);
        out
    }

    /// Copies the elements, in C order, into `dst` (one copy when they are contiguous).
    ///
    /// # Errors
    /// [`ViewError::SliceLength`] if `dst` does not have [`len`](Self::len) elements.
    pub fn copy_to_slice(&self, dst: &mut [T]) -> Result<()> {
        if dst.len() != self.len() {
            return Err(ViewError::SliceLength {
                expected: self.len(),
                actual: dst.len(),
            });
        }
        if self.layout.is_c_contiguous() {
            return self
                .bytes
                .copy_to(
                    usize_off(self.layout.offset()),
                    bytemuck::cast_slice_mut(dst),
                )
                .ok_or_else(|| outside(&self.layout, self.bytes.len()));
        }
        for (d, v) in dst.iter_mut().zip(self.iter()) {
            *d = v;
        }
        Ok(())
    }

    /// The views of each index along `axis` (numpy's iteration over `a` for axis 0).
    ///
    /// # Errors
    /// A [`ViewError::Layout`] error if `axis` is out of range.
    pub fn axis_iter(&self, axis: usize) -> Result<impl Iterator<Item = VolatileView<'a, T>> + 'a>
    where
        T: 'a,
    {
        let this = *self;
        let n = *self
            .shape()
            .get(axis)
            .ok_or(stridemap_core::LayoutError::NoSuchAxis {
                axis,
                ndim: self.ndim(),
            })?;
        Ok((0..n).filter_map(move |i| this.index_axis(axis, i).ok()))
    }

    /// The descriptor this view was made from, if it came from a mapping.
    pub fn source(&self) -> Option<&'a ValidDescriptor> {
        self.source
    }
}

subviews!(impl<'a, T: Element> VolatileView<'a, T>);

impl<'a, T: Element> IntoIterator for VolatileView<'a, T> {
    type Item = T;
    type IntoIter = VolatileIter<'a, T>;
    fn into_iter(self) -> VolatileIter<'a, T> {
        self.iter()
    }
}

impl<'a, T: Element> VolatileViewMut<'a, T> {
    /// A writable volatile view of `layout` over `bytes`, for code that takes volatile views.
    ///
    /// # Errors
    /// As [`VolatileView::new`].
    pub fn new(bytes: &'a mut [u8], layout: Layout) -> Result<VolatileViewMut<'a, T>> {
        VolatileViewMut::with_source(VolatileBytesMut::from_slice(bytes), layout, None)
    }

    pub(crate) fn with_source(
        bytes: VolatileBytesMut<'a>,
        layout: Layout,
        source: Option<&'a ValidDescriptor>,
    ) -> Result<VolatileViewMut<'a, T>> {
        check::<T>(bytes.addr(), bytes.len(), &layout)?;
        Ok(VolatileViewMut {
            bytes,
            layout,
            source,
            _t: PhantomData,
        })
    }

    fn with_layout(self, layout: Layout) -> Result<Self> {
        check::<T>(self.bytes.addr(), self.bytes.len(), &layout)?;
        Ok(VolatileViewMut { layout, ..self })
    }

    /// A read-only volatile view of the same elements, while this one is borrowed.
    pub fn as_volatile(&self) -> VolatileView<'_, T> {
        VolatileView {
            bytes: self.bytes.volatile(),
            layout: self.layout,
            source: self.source,
            _t: PhantomData,
        }
    }

    /// A shorter-lived writer of the same elements, e.g. to make a sub-view and keep this one.
    pub fn reborrow(&mut self) -> VolatileViewMut<'_, T> {
        VolatileViewMut {
            bytes: self.bytes.reborrow(),
            layout: self.layout,
            source: self.source,
            _t: PhantomData,
        }
    }

    /// The element at `index`, copied.
    ///
    /// # Errors
    /// As [`VolatileView::get`].
    pub fn get(&self, index: &[usize]) -> Result<T> {
        let off = self.layout.element_offset(super::as_u64s(index))?;
        self.bytes
            .read(usize_off(off))
            .ok_or_else(|| outside(&self.layout, self.bytes.len()))
    }

    /// Writes `value` at `index`.
    ///
    /// # Errors
    /// As [`VolatileView::get`].
    pub fn set(&mut self, index: &[usize], value: T) -> Result<()> {
        let off = self.layout.element_offset(super::as_u64s(index))?;
        let len = self.bytes.len();
        self.bytes
            .write(usize_off(off), value)
            .ok_or_else(|| outside(&self.layout, len))
    }

    /// The elements in logical C order, copied.
    pub fn iter(&self) -> VolatileIter<'_, T> {
        VolatileIter::new(self.bytes.volatile(), &self.layout)
    }

    /// A C-ordered copy of the elements.
    pub fn to_vec(&self) -> Vec<T> {
        self.as_volatile().to_vec()
    }

    /// Calls `f` on a copy of every element in logical C order and writes the result back.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut T)) {
        self.update(|mut v| {
            f(&mut v);
            v
        });
    }

    /// Replaces every element `x` by `f(x)`, in logical C order: one loop of volatile
    /// accesses for a contiguous view, an offset walk otherwise.
    fn update(&mut self, mut f: impl FnMut(T) -> T) {
        let VolatileViewMut { bytes, layout, .. } = self;
        if layout.is_c_contiguous() {
            let n = usize::try_from(layout.len()).unwrap_or(0);
            if bytes
                .update_run(usize_off(layout.offset()), n, &mut f)
                .is_some()
            {
                return;
            }
        }
        layout.offsets().for_each(|off| {
            let off = usize_off(off);
            if let Some(v) = bytes.read::<T>(off) {
                let _ = bytes.write(off, f(v));
            }
        });
    }

    /// Writes `f()` to every element in logical C order.
    pub fn fill_with(&mut self, mut f: impl FnMut() -> T) {
        let VolatileViewMut { bytes, layout, .. } = self;
        if layout.is_c_contiguous() {
            let n = usize::try_from(layout.len()).unwrap_or(0);
            if bytes
                .fill_run(usize_off(layout.offset()), n, &mut f)
                .is_some()
            {
                return;
            }
        }
        layout.offsets().for_each(|off| {
            let _ = bytes.write(usize_off(off), f());
        });
    }

    /// Sets every element to `value`.
    pub fn fill(&mut self, value: T) {
        self.fill_with(|| value);
    }

    /// Writes `src` to the elements in C order: one copy when they are contiguous.
    ///
    /// # Errors
    /// [`ViewError::SliceLength`] if `src` does not have [`len`](Self::len) elements.
    pub fn copy_from_slice(&mut self, src: &[T]) -> Result<()> {
        if src.len() != self.len() {
            return Err(ViewError::SliceLength {
                expected: self.len(),
                actual: src.len(),
            });
        }
        if self.layout.is_c_contiguous() {
            let len = self.bytes.len();
            return self
                .bytes
                .copy_from(usize_off(self.layout.offset()), bytemuck::cast_slice(src))
                .ok_or_else(|| outside(&self.layout, len));
        }
        let mut it = src.iter();
        self.fill_with(|| it.next().copied().unwrap_or_else(T::zeroed));
        Ok(())
    }

    /// The elements before index `at` of `axis` and those from it on, as two writers that can
    /// be used at once (e.g. by two threads). When the two parts lie apart in memory (rows of
    /// a C-ordered array, columns of an F-ordered one), each writer is held to its part's
    /// bytes at no cost; when they interleave, each access checks that its element is the
    /// writer's (a division per axis), so split along the outer axis where speed matters.
    ///
    /// # Errors
    /// [`ViewError::Overlapping`] if the parts interleave and elements of this view share
    /// bytes (zero or short strides), a [`ViewError::Layout`] error if `axis` is out of range.
    pub fn split_axis(self, axis: usize, at: usize) -> Result<(Self, Self)> {
        if axis >= self.ndim() {
            return Err(stridemap_core::LayoutError::NoSuchAxis {
                axis,
                ndim: self.ndim(),
            }
            .into());
        }
        let VolatileViewMut {
            bytes,
            layout,
            source,
            ..
        } = self;
        // Lossless on the 64-bit targets this crate builds for.
        let at = u64::try_from(at).unwrap_or(u64::MAX);
        let (a, la, b, lb) =
            split_disjoint(bytes, &layout, axis, at).ok_or(ViewError::Overlapping)?;
        let part = |bytes, layout| VolatileViewMut {
            bytes,
            layout,
            source,
            _t: PhantomData,
        };
        Ok((part(a, la), part(b, lb)))
    }

    /// Disjoint writers of `size` consecutive indices of `axis` each (the last may be
    /// shorter): row blocks for a pool of workers.
    ///
    /// # Errors
    /// As [`split_axis`](Self::split_axis); also [`ViewError::ZeroChunk`] if `size` is 0.
    pub fn axis_chunks(self, axis: usize, size: usize) -> Result<Vec<Self>> {
        if size == 0 {
            return Err(ViewError::ZeroChunk);
        }
        let len = *self
            .shape()
            .get(axis)
            .ok_or(stridemap_core::LayoutError::NoSuchAxis {
                axis,
                ndim: self.ndim(),
            })?;
        if len <= size {
            return Ok(vec![self]);
        }
        let VolatileViewMut {
            bytes,
            layout,
            source,
            ..
        } = self;
        let bounds: Vec<u64> = (0..len)
            .step_by(size)
            .chain([len])
            .map(|b| b as u64)
            .collect();
        let pieces = split_ranges(bytes, &layout, axis, &bounds).ok_or(ViewError::Overlapping)?;
        Ok(pieces
            .into_iter()
            .map(|(bytes, layout)| VolatileViewMut {
                bytes,
                layout,
                source,
                _t: PhantomData,
            })
            .collect())
    }

    /// The descriptor this view was made from, if it came from a mapping.
    pub fn source(&self) -> Option<&'a ValidDescriptor> {
        self.source
    }
}

subviews!(impl<'a, T: Element> VolatileViewMut<'a, T>);

/// The elements of a [`VolatileView`] in logical C order, copied one by one.
#[derive(Clone, Debug)]
pub struct VolatileIter<'a, T> {
    bytes: VolatileBytes<'a>,
    inner: Inner,
    _t: PhantomData<fn() -> T>,
}

#[derive(Clone, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "an iterator lives on the stack; boxing would allocate per iteration"
)]
enum Inner {
    /// Byte offsets `next, next + size, …` below `end`.
    Contiguous {
        next: usize,
        end: usize,
    },
    Strided(stridemap_core::Offsets<'static>),
}

impl<'a, T: Element> VolatileIter<'a, T> {
    fn new(bytes: VolatileBytes<'a>, layout: &Layout) -> Self {
        let inner = if layout.is_c_contiguous() {
            let next = usize_off(layout.offset());
            let n = usize::try_from(layout.len()).unwrap_or(0);
            Inner::Contiguous {
                next,
                end: n
                    .checked_mul(size_of::<T>())
                    .and_then(|b| b.checked_add(next))
                    .unwrap_or(next),
            }
        } else {
            Inner::Strided(layout.into_offsets())
        };
        VolatileIter {
            bytes,
            inner,
            _t: PhantomData,
        }
    }
}

impl<T: Element> Iterator for VolatileIter<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        match &mut self.inner {
            Inner::Contiguous { next, end } => {
                if *next >= *end {
                    return None;
                }
                let v = self.bytes.read(*next);
                *next += size_of::<T>();
                v
            }
            Inner::Strided(offsets) => self.bytes.read(usize_off(offsets.next()?)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.inner {
            Inner::Contiguous { next, end } => {
                let n = end.saturating_sub(*next) / size_of::<T>().max(1);
                (n, Some(n))
            }
            Inner::Strided(offsets) => offsets.size_hint(),
        }
    }

    #[inline]
    fn fold<B, F>(self, init: B, mut f: F) -> B
    where
        F: FnMut(B, T) -> B,
    {
        let bytes = self.bytes;
        match self.inner {
            Inner::Contiguous { next, end } => {
                let n = end.saturating_sub(next) / size_of::<T>().max(1);
                // The run is inside and aligned (the view was checked), so `fold_run` takes
                // it; the element-wise walk is the fallback that cannot fail.
                let init = match bytes.fold_run(next, n, init, &mut f) {
                    Ok(acc) => return acc,
                    Err(init) => init,
                };
                (next..end)
                    .step_by(size_of::<T>().max(1))
                    .fold(init, |acc, off| match bytes.read(off) {
                        Some(v) => f(acc, v),
                        None => acc,
                    })
            }
            Inner::Strided(offsets) => {
                offsets.fold(init, |acc, off| match bytes.read(usize_off(off)) {
                    Some(v) => f(acc, v),
                    None => acc,
                })
            }
        }
    }
}

impl<T: Element> ExactSizeIterator for VolatileIter<'_, T> {}
impl<T: Element> core::iter::FusedIterator for VolatileIter<'_, T> {}

impl<T: Element> core::fmt::Debug for VolatileView<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VolatileView")
            .field("dtype", &T::dtype().map(|d| d.typestr()))
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl<T: Element> core::fmt::Debug for VolatileViewMut<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VolatileViewMut")
            .field("dtype", &T::dtype().map(|d| d.typestr()))
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}
