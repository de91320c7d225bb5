//! Arrays this process owns: a private copy of a mapping's elements, or an inline message's.

use stridemap_core::{DType, Layout, Order};

use crate::sys::VolatileBytes;
use crate::view::as_u64s;
use crate::{ByteView, Element, Error, Result, View, ViewError, ViewMut, ViewResult};

/// An array whose bytes this process owns, packed in C order in an 8-byte-aligned buffer:
/// nobody else can change them, so its views lend references.
///
/// Made by [`Mapping::copy_array`](crate::Mapping::copy_array) (a private copy of a mapping's
/// elements), by [`OwnedArray::from_bytes`], or received inline
/// ([`Received::Owned`](crate::message::Received::Owned)).
///
/// ```
/// use stridemap::{DType, OwnedArray};
/// let a = OwnedArray::from_bytes(DType::parse("<i2")?, &[2, 2], &[1, 0, 2, 0, 3, 0, 4, 0])?;
/// assert_eq!(a.view::<i16>()?.to_vec(), [1, 2, 3, 4]);
/// # Ok::<(), stridemap::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedArray {
    dtype: DType,
    layout: Layout,
    /// The bytes, in `u64` words for alignment; `layout.nbytes()` of them are the array's.
    words: Vec<u64>,
}

fn words_for(n: u64) -> ViewResult<Vec<u64>> {
    let n = usize::try_from(n).map_err(|_| ViewError::TooLarge)?;
    Ok(vec![0u64; n.div_ceil(8)])
}

impl OwnedArray {
    /// An array of `dtype` and `shape` holding `bytes` (C order, exactly the array's bytes).
    ///
    /// # Errors
    /// [`ViewError::Layout`](crate::ViewError::Layout) (inside [`Error::View`]) for a shape
    /// that does not fit; [`Error::InlineLength`] if `bytes` is not exactly the array's size.
    pub fn from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<OwnedArray> {
        let layout = Layout::contiguous(dtype.itemsize(), as_u64s(shape), Order::C)?;
        if layout.nbytes() != bytes.len() as u64 {
            return Err(Error::InlineLength {
                expected: layout.nbytes(),
                actual: bytes.len() as u64,
            });
        }
        let mut words = words_for(layout.nbytes())?;
        if let Some(dst) = bytemuck::cast_slice_mut::<u64, u8>(&mut words).get_mut(..bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        Ok(OwnedArray {
            dtype,
            layout,
            words,
        })
    }

    /// The elements of `layout` over `src`, copied and packed in C order.
    pub(crate) fn copy_from(
        src: VolatileBytes<'_>,
        layout: Layout,
        dtype: DType,
    ) -> ViewResult<OwnedArray> {
        let packed = Layout::contiguous(dtype.itemsize(), layout.shape(), Order::C)?;
        let mut words = words_for(packed.nbytes())?;
        let n = usize::try_from(packed.nbytes()).map_err(|_| ViewError::TooLarge)?;
        let short = || ViewError::BufferTooShort {
            needed: layout.span().end,
            len: src.len() as u64,
        };
        let dst = bytemuck::cast_slice_mut::<u64, u8>(&mut words)
            .get_mut(..n)
            .ok_or(ViewError::TooLarge)?;
        if layout.is_c_contiguous() {
            let start = usize::try_from(layout.offset()).map_err(|_| ViewError::TooLarge)?;
            src.copy_to(start, dst).ok_or_else(short)?;
        } else {
            let size = dtype.itemsize() as usize;
            for (chunk, off) in dst.chunks_exact_mut(size.max(1)).zip(layout.offsets()) {
                let off = usize::try_from(off).map_err(|_| ViewError::TooLarge)?;
                src.copy_to(off, chunk).ok_or_else(short)?;
            }
        }
        Ok(OwnedArray {
            dtype,
            layout: packed,
            words,
        })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The C-contiguous layout of the elements.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The elements' bytes, packed in C order.
    pub fn bytes(&self) -> &[u8] {
        let n = self.layout.nbytes() as usize;
        bytemuck::cast_slice::<u64, u8>(&self.words)
            .get(..n)
            .unwrap_or_default()
    }

    /// A byte view of the elements.
    ///
    /// # Errors
    /// None in practice (the layout was made for this buffer); reported rather than panicking.
    pub fn byte_view(&self) -> ViewResult<ByteView<'_>> {
        ByteView::new(bytemuck::cast_slice(&self.words), self.layout, self.dtype)
    }

    /// A typed view; the dtype must be `T`'s exactly.
    ///
    /// # Errors
    /// [`ViewError::DtypeMismatch`].
    pub fn view<T: Element>(&self) -> ViewResult<View<'_, T>> {
        self.check::<T>()?;
        View::new(bytemuck::cast_slice(&self.words), self.layout)
    }

    /// A writable typed view; the dtype must be `T`'s exactly.
    ///
    /// # Errors
    /// [`ViewError::DtypeMismatch`].
    pub fn view_mut<T: Element>(&mut self) -> ViewResult<ViewMut<'_, T>> {
        self.check::<T>()?;
        ViewMut::new(bytemuck::cast_slice_mut(&mut self.words), self.layout)
    }

    fn check<T: Element>(&self) -> ViewResult<()> {
        let want = T::dtype()?;
        if want != self.dtype {
            return Err(ViewError::DtypeMismatch {
                have: self.dtype,
                want,
            });
        }
        Ok(())
    }
}
