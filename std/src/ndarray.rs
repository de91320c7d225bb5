//! `ndarray` interop: views as `ArrayViewD` / `ArrayViewMutD` (negative strides included),
//! and descriptors of ndarray views that live inside a mapping.
//!
//! The names say what is copied: `as_ndarray` borrows the same bytes (a [`View`], which
//! lends references), `into_ndarray` turns a [`ViewMut`] into a mutable ndarray view, and
//! `to_ndarray` always copies into an owned `ArrayD` (on [`View`] and [`VolatileView`] alike).

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use stridemap_core::{Layout, ValidDescriptor};

use crate::{Element, Mapping, View, ViewError, ViewMut, ViewResult as Result, VolatileView, sys};

impl<T: Element> VolatileView<'_, T> {
    /// A C-ordered copy of the elements as an owned `ndarray` array: how to compute with
    /// ndarray on bytes other processes may write (a [`View`] lends an `ndarray` view
    /// without copying where references are sound: [`View::as_ndarray`]).
    ///
    /// ```
    /// use stridemap::{Layout, Order, VolatileView};
    /// let data = [1.0f64, 2.0, 3.0, 4.0];
    /// let v = VolatileView::<f64>::new(bytemuck::cast_slice(&data), Layout::contiguous(8, &[2, 2], Order::C)?)?;
    /// let a = v.t().to_ndarray()?;
    /// assert_eq!(a[[0, 1]], 3.0);
    /// # Ok::<(), stridemap::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ViewError::TooLarge`] if `ndarray` refuses the shape (its size overflows `isize`).
    pub fn to_ndarray(&self) -> Result<ArrayD<T>> {
        ArrayD::from_shape_vec(IxDyn(self.shape()), self.to_vec()).map_err(|_| ViewError::TooLarge)
    }
}

impl<'a, T: Element> View<'a, T> {
    /// The same elements as an `ndarray` view, borrowing the same buffer (no copy).
    ///
    /// ```
    /// use stridemap::View;
    /// use stridemap::{Layout, Order, Slice};
    /// let data: Vec<f32> = (0..6).map(|x| x as f32).collect();
    /// let v = View::<f32>::new(bytemuck::cast_slice(&data), Layout::contiguous(4, &[2, 3], Order::C)?)?;
    /// let a = v.slice_axis(1, Slice::REVERSED)?.as_ndarray()?;
    /// assert_eq!(a.strides(), &[3, -1]);
    /// assert_eq!(a[[1, 0]], 5.0);
    /// # Ok::<(), stridemap::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ViewError::TooLarge`] when a size, stride or offset of the layout does not fit
    /// `ndarray`'s `usize`/`isize`.
    pub fn as_ndarray(&self) -> Result<ArrayViewD<'a, T>> {
        sys::array_view(self.elems(), self.layout()).ok_or(ViewError::TooLarge)
    }

    /// A C-ordered copy of the elements as an owned `ndarray` array, as
    /// [`VolatileView::to_ndarray`] makes.
    ///
    /// ```
    /// use stridemap::{Layout, Order, View};
    /// let data = [1u16, 2, 3, 4];
    /// let v = View::<u16>::new(bytemuck::cast_slice(&data), Layout::contiguous(2, &[2, 2], Order::C)?)?;
    /// let a = v.t().to_ndarray()?;
    /// assert_eq!((a[[0, 1]], a.is_standard_layout()), (3, true));
    /// # Ok::<(), stridemap::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ViewError::TooLarge`] if `ndarray` refuses the shape (its size overflows `isize`).
    pub fn to_ndarray(&self) -> Result<ArrayD<T>> {
        ArrayD::from_shape_vec(IxDyn(self.shape()), self.to_vec()).map_err(|_| ViewError::TooLarge)
    }
}

impl<'a, T: Element> ViewMut<'a, T> {
    /// The same elements as a mutable `ndarray` view. Fails with [`ViewError::Overlapping`] when
    /// elements share memory (zero or short strides), which ndarray cannot represent.
    ///
    /// # Errors
    /// [`ViewError::Overlapping`]; [`ViewError::TooLarge`] if a length does not fit `usize`.
    pub fn into_ndarray(self) -> Result<ArrayViewMutD<'a, T>> {
        let (elems, layout) = self.into_parts();
        if layout.may_overlap() {
            return Err(ViewError::Overlapping);
        }
        sys::array_view_mut(elems, &layout).ok_or(ViewError::TooLarge)
    }
}

impl Mapping {
    /// The descriptor of an ndarray view whose elements lie inside this mapping's buffer
    /// (e.g. a slice of [`View::as_ndarray`]): same file, this view's shape and strides.
    ///
    /// Fails with [`ViewError::NotInMapping`] if the array does not point into the buffer, or
    /// with a descriptor error if any element would fall outside it.
    ///
    /// # Errors
    /// [`ViewError::NotInMapping`], [`ViewError::TooLarge`], or a descriptor error if an element falls outside the buffer.
    pub fn describe_array<T: Element>(&self, array: &ArrayViewD<'_, T>) -> Result<ValidDescriptor> {
        let size = core::mem::size_of::<T>() as i64;
        let base = self.base_addr();
        let offset = (array.as_ptr() as usize)
            .checked_sub(base)
            .ok_or(ViewError::NotInMapping)? as u64;
        let shape: Vec<u64> = array.shape().iter().map(|&d| d as u64).collect();
        let strides = array
            .strides()
            .iter()
            .map(|&s| (s as i64).checked_mul(size))
            .collect::<Option<Vec<i64>>>()
            .ok_or(ViewError::NotInMapping)?;
        let layout = Layout::new(
            size as u32,
            &shape,
            &strides,
            offset,
            self.descriptor().buffer_len(),
        )?;
        Ok(self.descriptor().to_builder().layout(&layout).build()?)
    }
}
