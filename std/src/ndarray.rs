//! `ndarray` interop: views as `ArrayViewD` / `ArrayViewMutD` (negative strides included),
//! and descriptors of ndarray views that live inside a mapping.

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use stridemap_core::{Layout, ValidDescriptor};

use crate::{Element, Mapping, SharedView, View, ViewError, ViewMut, ViewResult as Result, sys};

impl<T: Element> SharedView<'_, T> {
    /// A C-ordered copy of the elements as an owned `ndarray` array: how to compute with
    /// ndarray on bytes other processes may write (a [`View`] lends an `ndarray` view
    /// without copying where references are sound).
    ///
    /// # Errors
    /// [`ViewError::TooLarge`] if `ndarray` refuses the shape (its size overflows `isize`).
    pub fn to_ndarray(&self) -> Result<ArrayD<T>> {
        ArrayD::from_shape_vec(IxDyn(self.shape()), self.to_vec()).map_err(|_| ViewError::TooLarge)
    }
}

impl<'a, T: Element> View<'a, T> {
    /// The same elements as an `ndarray` view, borrowing the same buffer.
    ///
    /// ```
    /// use stridemap::View;
    /// use stridemap::{Layout, Order, Slice};
    /// let data: Vec<f32> = (0..6).map(|x| x as f32).collect();
    /// let v = View::<f32>::new(bytemuck::cast_slice(&data), Layout::contiguous(4, &[2, 3], Order::C)?)?;
    /// let a = v.slice_axis(1, Slice::REVERSED)?.to_ndarray()?;
    /// assert_eq!(a.strides(), &[3, -1]);
    /// assert_eq!(a[[1, 0]], 5.0);
    /// # Ok::<(), stridemap::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ViewError::TooLarge`] when a size, stride or offset of the layout does not fit
    /// `ndarray`'s `usize`/`isize`.
    pub fn to_ndarray(&self) -> Result<ArrayViewD<'a, T>> {
        sys::array_view(self.elems(), self.layout()).ok_or(ViewError::TooLarge)
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
    /// (e.g. a slice of [`View::to_ndarray`]): same file, this view's shape and strides.
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
