//! What [`Pool::share_arc`](crate::Pool::share_arc) can share: anything that lends a byte view
//! of its elements.

use stridemap::{ByteView, Element};
use stridemap_core::{Layout, Order};

use crate::Result;

/// An array the pool can share from an `Arc`, by identity.
///
/// ```
/// use stridemap_shm::ShareSource;
/// let v = vec![1.0f64, 2.0, 3.0];
/// assert_eq!(v.byte_view()?.shape(), &[3]);
/// # Ok::<(), stridemap_shm::Error>(())
/// ```
pub trait ShareSource: Send + Sync + 'static {
    /// The elements, their dtype and layout.
    fn byte_view(&self) -> Result<ByteView<'_>>;
}

fn vector<T: Element>(data: &[T]) -> Result<ByteView<'_>> {
    let layout = Layout::contiguous(
        core::mem::size_of::<T>() as u32,
        &[data.len() as u64],
        Order::C,
    )?;
    Ok(ByteView::new(
        bytemuck::cast_slice(data),
        layout,
        T::dtype()?,
    )?)
}

impl<T: Element + Send + Sync> ShareSource for Vec<T> {
    fn byte_view(&self) -> Result<ByteView<'_>> {
        vector(self)
    }
}

impl<T: Element + Send + Sync> ShareSource for [T] {
    fn byte_view(&self) -> Result<ByteView<'_>> {
        vector(self)
    }
}

#[cfg(feature = "ndarray")]
impl<T: Element + Send + Sync, D: ndarray::Dimension + 'static> ShareSource
    for ndarray::Array<T, D>
{
    fn byte_view(&self) -> Result<ByteView<'_>> {
        let size = core::mem::size_of::<T>() as i64;
        let memory = self
            .as_slice_memory_order()
            .ok_or(crate::Error::NotShareable {
                reason: "its elements are not one contiguous block of memory; share a \
                         standard-layout copy (`as_standard_layout().to_owned()`)",
            })?;
        let base = memory.as_ptr() as usize;
        let offset = (self.as_ptr() as usize).saturating_sub(base) as u64;
        let shape: Vec<u64> = self.shape().iter().map(|&d| d as u64).collect();
        let strides: Vec<i64> = self.strides().iter().map(|&s| s as i64 * size).collect();
        let bytes: &[u8] = bytemuck::cast_slice(memory);
        let layout = Layout::new(size as u32, &shape, &strides, offset, bytes.len() as u64)?;
        Ok(ByteView::new(bytes, layout, T::dtype()?)?)
    }
}
