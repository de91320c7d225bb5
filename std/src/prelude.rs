//! The names a consumer uses in most programs, for one glob import: the one open
//! ([`OpenOptions`], [`Mode`]), the socket, the mapping and its views, slices and orders.
//! Errors are left out ([`Error`](crate::Error), [`Result`](crate::Result)): they would hide
//! the standard library's `Result`.
//!
//! ```
//! use stridemap::prelude::*;
//!
//! fn total(stream: &std::os::unix::net::UnixStream) -> stridemap::Result<f64> {
//!     let m: Mapping = OpenOptions::new().open(socket::recv(stream)?)?;
//!     let v: VolatileView<'_, f64> = m.volatile_view()?.slice_axis(0, Slice::REVERSED)?;
//!     Ok(v.iter().sum())
//! }
//! ```

pub use crate::{
    ByteView, DType, Element, Layout, Mapping, Mode, OpenOptions, Order, Slice, ValidDescriptor,
    View, ViewMut, VolatileView, VolatileViewMut, decode_any, socket,
};
