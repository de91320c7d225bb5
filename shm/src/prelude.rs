//! The names a producer uses in most programs, for one glob import: the pool and its
//! handles, and everything in `stridemap`'s prelude (a program that is its own consumer, or
//! hands work to workers it runs, needs no other crate). [`Error`](crate::Error) and
//! [`Result`](crate::Result) are left out: they would hide the standard library's `Result`.
//!
//! ```
//! use stridemap_shm::prelude::*;
//!
//! let pool = Pool::with_config(PoolConfig::default().kind(SegmentKind::Memfd))?;
//! let mut a: SharedArrayMut<f64> = pool.alloc(&[4, 3], Order::C)?;
//! a.fill(1.5)?;
//! let a: SharedArray<f64> = a.freeze()?;
//! let (tx, rx) = std::os::unix::net::UnixStream::pair()?;
//! a.send(&tx)?;
//! let m = OpenOptions::new().open(socket::recv(&rx)?)?;
//! assert_eq!(m.view::<f64>()?.slice_axis(0, Slice::between(1, 3))?.len(), 6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use crate::{OutputArray, Pool, PoolConfig, SegmentKind, SharedArray, SharedArrayMut};
pub use stridemap::prelude::*;
