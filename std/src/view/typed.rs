//! Typed views: elements handed out as `&T` / `&mut T`.

use core::mem::{align_of, size_of};

use stridemap_core::{Layout, ValidDescriptor};

use super::{ByteView, Iter, VolatileView, describe, subviews};
use crate::sys::VolatileBytes;
use crate::{Element, Unaligned, ViewError, ViewError as Error, ViewResult as Result};

/// A read-only strided view whose elements are `T`.
///
/// Made by [`Mapping::view`](crate::Mapping::view) (which checks the dtype) or
/// [`View::new`] over any byte buffer. Every element is aligned for `T` (checked when the
/// view is made), so reads are plain loads. Borrowing the buffer, it cannot outlive it.
///
/// ```
/// use stridemap::View;
/// use stridemap::{Layout, Order, Slice};
/// let data: Vec<f64> = (0..12).map(f64::from).collect();
/// let bytes: &[u8] = bytemuck::cast_slice(&data);
/// let v = View::<f64>::new(bytes, Layout::contiguous(8, &[3, 4], Order::C)?)?;
/// let col = v.t().index_axis(0, 1)?.slice_axis(0, Slice::REVERSED)?; // a[::-1, 1]
/// assert_eq!(col.to_vec(), [9.0, 5.0, 1.0]);
/// assert_eq!(col.iter().sum::<f64>(), 15.0);
/// # Ok::<(), stridemap::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct View<'a, T> {
    /// The whole enclosing buffer.
    bytes: &'a [u8],
    /// Its whole `T` slots (element offsets are multiples of the size).
    elems: &'a [T],
    layout: Layout,
    source: Option<&'a ValidDescriptor>,
}

/// A writable strided view whose elements are `T` (a mapping opened `r+` or `c`, or any
/// mutable byte buffer).
///
/// ```
/// use stridemap::ViewMut;
/// use stridemap::{Layout, Order, Slice};
/// let mut data = vec![0i32; 6];
/// let mut v = ViewMut::<i32>::new(bytemuck::cast_slice_mut(&mut data), Layout::contiguous(4, &[2, 3], Order::C)?)?;
/// v.reborrow().slice_axis(1, Slice::step(2))?.fill(7);
/// *v.get_mut(&[1, 1])? = -1;
/// assert_eq!(data, [7, 0, 7, 7, -1, 7]);
/// # Ok::<(), stridemap::Error>(())
/// ```
pub struct ViewMut<'a, T> {
    /// The enclosing buffer's whole `T` slots.
    elems: &'a mut [T],
    layout: Layout,
    source: Option<&'a ValidDescriptor>,
}

/// A buffer of `len` bytes at address `addr` holds every element of `layout` (and so of
/// every sub-view), each a whole, aligned `T` (element offsets are multiples of the size).
pub(crate) fn check<T: Element>(addr: usize, len: usize, layout: &Layout) -> Result<()> {
    if (len as u64) < layout.span().end {
        return Err(ViewError::BufferTooShort {
            needed: layout.span().end,
            len: len as u64,
        });
    }
    let size = size_of::<T>();
    if layout.itemsize() as usize != size {
        return Err(ViewError::ItemsizeMismatch {
            itemsize: layout.itemsize(),
            type_size: size,
        });
    }
    if !addr.is_multiple_of(align_of::<T>()) {
        return Err(ViewError::Misaligned {
            what: Unaligned::Buffer { addr },
            align: align_of::<T>(),
        });
    }
    let size = size as u64;
    if !layout.offset().is_multiple_of(size) {
        return Err(ViewError::Misaligned {
            what: Unaligned::Offset {
                offset: layout.offset(),
            },
            align: size as usize,
        });
    }
    for (axis, (&d, &s)) in layout.shape().iter().zip(layout.strides()).enumerate() {
        if d > 1 && !s.unsigned_abs().is_multiple_of(size) {
            return Err(ViewError::Misaligned {
                what: Unaligned::Stride { axis, stride: s },
                align: size as usize,
            });
        }
    }
    Ok(())
}

/// The whole `T`s of an aligned buffer.
fn cast<T: Element>(bytes: &[u8]) -> Result<&[T]> {
    let whole = bytes.len() / size_of::<T>() * size_of::<T>();
    bytemuck::try_cast_slice(bytes.get(..whole).unwrap_or_default()).map_err(|_| {
        ViewError::Misaligned {
            what: Unaligned::Buffer {
                addr: bytes.as_ptr() as usize,
            },
            align: align_of::<T>(),
        }
    })
}

fn cast_mut<T: Element>(bytes: &mut [u8]) -> Result<&mut [T]> {
    let addr = bytes.as_ptr() as usize;
    let whole = bytes.len() / size_of::<T>() * size_of::<T>();
    bytemuck::try_cast_slice_mut(bytes.get_mut(..whole).unwrap_or_default()).map_err(|_| {
        ViewError::Misaligned {
            what: Unaligned::Buffer { addr },
            align: align_of::<T>(),
        }
    })
}

/// Slot of the element at byte offset `off`.
#[inline(always)]
fn slot<T>(off: u64) -> usize {
    (off / size_of::<T>() as u64) as usize
}

/// Error for an index the layout accepted but the buffer does not hold — impossible, since a
/// layout's elements are inside its buffer; reported rather than panicking.
fn outside(layout: &Layout) -> Error {
    Error::Layout(stridemap_core::LayoutError::OutOfBounds {
        lo: i128::from(layout.span().start),
        hi: i128::from(layout.span().end),
        buffer_len: layout.buffer_len(),
    })
}

impl<'a, T: Element> View<'a, T> {
    /// A typed view of `layout` over `bytes`, its buffer (at least the bytes its elements
    /// touch). The caller vouches that the bytes are `T`s.
    ///
    /// # Errors
    /// [`ViewError::BufferTooShort`], [`ViewError::ItemsizeMismatch`], [`ViewError::Misaligned`].
    pub fn new(bytes: &'a [u8], layout: Layout) -> Result<View<'a, T>> {
        View::with_source(bytes, layout, None)
    }

    pub(crate) fn with_source(
        bytes: &'a [u8],
        layout: Layout,
        source: Option<&'a ValidDescriptor>,
    ) -> Result<View<'a, T>> {
        check::<T>(bytes.as_ptr() as usize, bytes.len(), &layout)?;
        Ok(View {
            bytes,
            elems: cast(bytes)?,
            layout,
            source,
        })
    }

    fn with_layout(self, layout: Layout) -> Result<Self> {
        check::<T>(self.bytes.as_ptr() as usize, self.bytes.len(), &layout)?;
        Ok(View { layout, ..self })
    }

    /// The element at `index` (one entry per axis).
    ///
    /// # Errors
    /// A [`ViewError::Layout`] error (wrong axis count, index out of range).
    pub fn get(&self, index: &[usize]) -> Result<&'a T> {
        let off = self.layout.element_offset(super::as_u64s(index))?;
        self.elems
            .get(slot::<T>(off))
            .ok_or_else(|| outside(&self.layout))
    }

    /// The elements in logical C order (last index fastest).
    pub fn iter(&self) -> Iter<'a, T> {
        match self.as_slice() {
            Some(s) => Iter::contiguous(s),
            None => Iter::strided(self.elems, &self.layout),
        }
    }

    /// The views of each index along `axis` (numpy's iteration over `a` for axis 0).
    ///
    /// # Errors
    /// A [`ViewError::Layout`] error if `axis` is out of range.
    pub fn axis_iter(&self, axis: usize) -> Result<impl Iterator<Item = View<'a, T>> + 'a> {
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

    /// Views of `size` consecutive indices of `axis` each (the last may be shorter), e.g.
    /// row blocks to hand to threads.
    ///
    /// # Errors
    /// A [`ViewError::Layout`] error if `axis` is out of range; [`ViewError::ZeroChunk`] if
    /// `size` is 0.
    pub fn axis_chunks(
        &self,
        axis: usize,
        size: usize,
    ) -> Result<impl Iterator<Item = View<'a, T>> + 'a> {
        if size == 0 {
            return Err(ViewError::ZeroChunk);
        }
        let this = *self;
        let n = *self
            .shape()
            .get(axis)
            .ok_or(stridemap_core::LayoutError::NoSuchAxis {
                axis,
                ndim: self.ndim(),
            })?;
        Ok((0..n.div_ceil(size)).filter_map(move |k| {
            let start = i64::try_from(k * size).ok()?;
            let stop = i64::try_from((k * size).saturating_add(size).min(n)).ok()?;
            this.slice_axis(axis, stridemap_core::Slice::range(start, stop))
                .ok()
        }))
    }

    /// The same elements as a [`VolatileView`] (for code written against volatile views).
    pub fn as_volatile(&self) -> VolatileView<'a, T> {
        VolatileView::checked(
            VolatileBytes::from_slice(self.bytes),
            self.layout,
            self.source,
        )
    }

    /// The elements as one slice, when they are C-contiguous.
    pub fn as_slice(&self) -> Option<&'a [T]> {
        if !self.layout.is_c_contiguous() {
            return None;
        }
        let start = slot::<T>(self.layout.offset());
        let len = usize::try_from(self.layout.len()).ok()?;
        self.elems.get(start..start.checked_add(len)?)
    }

    /// A C-ordered copy of the elements.
    pub fn to_vec(&self) -> Vec<T> {
        match self.as_slice() {
            Some(s) => s.to_vec(),
            None => self.iter().copied().collect(),
        }
    }

    /// The descriptor this view was made from, if it came from a mapping.
    pub fn source(&self) -> Option<&'a ValidDescriptor> {
        self.source
    }

    /// The same elements as a byte view.
    ///
    /// # Errors
    /// Only if `T`'s dtype is invalid (an `Element` impl whose size its kind does not allow).
    pub fn as_bytes(&self) -> Result<ByteView<'a>> {
        ByteView::with_source(self.bytes, self.layout, T::dtype()?, self.source)
    }

    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
    pub(crate) fn elems(&self) -> &'a [T] {
        self.elems
    }
}

subviews!(impl<'a, T: Element> View<'a, T>);

impl<'a, T: Element> IntoIterator for &View<'a, T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T: Element> ViewMut<'a, T> {
    /// A writable typed view of `layout` over `bytes`, its buffer (at least the bytes its
    /// elements touch).
    ///
    /// # Errors
    /// [`ViewError::BufferTooShort`], [`ViewError::ItemsizeMismatch`], [`ViewError::Misaligned`].
    pub fn new(bytes: &'a mut [u8], layout: Layout) -> Result<ViewMut<'a, T>> {
        ViewMut::with_source(bytes, layout, None)
    }

    pub(crate) fn with_source(
        bytes: &'a mut [u8],
        layout: Layout,
        source: Option<&'a ValidDescriptor>,
    ) -> Result<ViewMut<'a, T>> {
        check::<T>(bytes.as_ptr() as usize, bytes.len(), &layout)?;
        Ok(ViewMut {
            elems: cast_mut(bytes)?,
            layout,
            source,
        })
    }

    fn with_layout(self, layout: Layout) -> Result<Self> {
        check::<T>(
            self.elems.as_ptr() as usize,
            core::mem::size_of_val(self.elems),
            &layout,
        )?;
        Ok(ViewMut { layout, ..self })
    }

    /// A read-only view of the same elements.
    pub fn view(&self) -> View<'_, T> {
        View {
            // Whole slots cover every element, which is all a view needs.
            bytes: bytemuck::cast_slice(self.elems),
            elems: self.elems,
            layout: self.layout,
            source: self.source,
        }
    }

    /// A shorter-lived `ViewMut` of the same elements, e.g. to make a sub-view and keep this one.
    pub fn reborrow(&mut self) -> ViewMut<'_, T> {
        ViewMut {
            elems: self.elems,
            layout: self.layout,
            source: self.source,
        }
    }

    /// The element at `index`.
    ///
    /// # Errors
    /// A [`ViewError::Layout`] error (wrong axis count, index out of range).
    pub fn get(&self, index: &[usize]) -> Result<&T> {
        let off = self.layout.element_offset(super::as_u64s(index))?;
        self.elems
            .get(slot::<T>(off))
            .ok_or_else(|| outside(&self.layout))
    }

    /// The element at `index`, writable.
    ///
    /// # Errors
    /// A [`ViewError::Layout`] error (wrong axis count, index out of range).
    pub fn get_mut(&mut self, index: &[usize]) -> Result<&mut T> {
        let off = self.layout.element_offset(super::as_u64s(index))?;
        let layout = self.layout;
        self.elems
            .get_mut(slot::<T>(off))
            .ok_or_else(|| outside(&layout))
    }

    /// Calls `f` on every element in logical C order. Where elements overlap (zero or short
    /// strides), the shared memory is visited once per element, as numpy would.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut T)) {
        let ViewMut { elems, layout, .. } = self;
        layout.offsets().for_each(|off| {
            if let Some(e) = elems.get_mut(slot::<T>(off)) {
                f(e);
            }
        });
    }

    /// The elements in logical C order, writable. `None` when elements share memory (zero
    /// or short strides), where `&mut`s would alias: use [`ViewMut::for_each_mut`] then.
    pub fn iter_mut(&mut self) -> Option<IterMut<'_, T>> {
        crate::sys::iter_mut(self.elems, &self.layout).map(|inner| IterMut { inner })
    }

    /// The views of each index along `axis`, writable, one after the other.
    ///
    /// # Errors
    /// A [`ViewError::Layout`] error if `axis` is out of range.
    pub fn for_each_axis(
        &mut self,
        axis: usize,
        mut f: impl FnMut(ViewMut<'_, T>) -> Result<()>,
    ) -> Result<()> {
        let n = *self
            .shape()
            .get(axis)
            .ok_or(stridemap_core::LayoutError::NoSuchAxis {
                axis,
                ndim: self.ndim(),
            })?;
        for i in 0..n {
            f(self.reborrow().index_axis(axis, i)?)?;
        }
        Ok(())
    }

    /// Sets every element to `value`.
    pub fn fill(&mut self, value: T) {
        match self.as_slice_mut() {
            Some(s) => s.fill(value),
            None => self.for_each_mut(|e| *e = value),
        }
    }

    /// The elements as one mutable slice, when they are C-contiguous.
    pub fn as_slice_mut(&mut self) -> Option<&mut [T]> {
        if !self.layout.is_c_contiguous() {
            return None;
        }
        let start = slot::<T>(self.layout.offset());
        let len = usize::try_from(self.layout.len()).ok()?;
        self.elems.get_mut(start..start.checked_add(len)?)
    }

    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
    pub(crate) fn into_parts(self) -> (&'a mut [T], Layout) {
        (self.elems, self.layout)
    }
}

subviews!(impl<'a, T: Element> ViewMut<'a, T>);

impl<T: Element + core::fmt::Debug> core::fmt::Debug for View<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("View")
            .field("dtype", &T::dtype().map(|d| d.typestr()))
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl<T: Element + core::fmt::Debug> core::fmt::Debug for ViewMut<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ViewMut")
            .field("dtype", &T::dtype().map(|d| d.typestr()))
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// The writable elements of a [`ViewMut`] in logical C order ([`ViewMut::iter_mut`]).
#[derive(Debug)]
pub struct IterMut<'v, T> {
    inner: crate::sys::IterMut<'v, T>,
}

impl<'v, T> Iterator for IterMut<'v, T> {
    type Item = &'v mut T;
    fn next(&mut self) -> Option<&'v mut T> {
        self.inner.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

macro_rules! index_impls {
    ($($name:ident),*) => {$(
        impl<T: Element, const N: usize> core::ops::Index<[usize; N]> for $name<'_, T> {
            type Output = T;

            /// The element at a fixed-size index, `v[[i, j]]`.
            ///
            /// # Panics
            /// If the index has the wrong number of axes or is out of range, as slice
            /// indexing does; [`get`](Self::get) returns an error instead.
            fn index(&self, index: [usize; N]) -> &T {
                match self.get(&index) {
                    Ok(e) => e,
                    Err(e) => panic!("index {index:?} of a view of shape {:?}: {e}", self.shape()),
                }
            }
        }
    )*};
}
index_impls!(View, ViewMut);

impl<T: Element, const N: usize> core::ops::IndexMut<[usize; N]> for ViewMut<'_, T> {
    /// The element at a fixed-size index, writable: `v[[i, j]] = x`.
    ///
    /// # Panics
    /// As [`Index`](core::ops::Index); [`get_mut`](ViewMut::get_mut) returns an error instead.
    fn index_mut(&mut self, index: [usize; N]) -> &mut T {
        if let Err(e) = self.layout.element_offset(super::as_u64s(&index)) {
            panic!("index {index:?} of a view of shape {:?}: {e}", self.shape());
        }
        match self.get_mut(&index) {
            Ok(e) => e,
            Err(e) => panic!("index {index:?}: {e}"),
        }
    }
}
