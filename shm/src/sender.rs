//! The sending end of a session (SPEC.md §6 "Reusing a mapping", case 4, and §6.2): each
//! segment's fd goes once per connection, later descriptors of it go alone, and release
//! records tell the receiver when to let go.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Weak;

use stridemap::{Mode, RECORD_LEN, Release, ValidDescriptor, socket};

use crate::array::Lease;
use crate::{Error, Result, SharedArray};

/// A producer's end of one connection to a receiver that keeps what it is handed (a
/// `stridemap::socket::Session`): the first descriptor of a segment goes with the segment's
/// fd (a memfd's), every later descriptor of the same segment and generation goes alone —
/// no reopen, no `SCM_RIGHTS`, and no new map on the other side. Once every handle of a
/// segment it handed is dropped, its next send (or [`flush`](Sender::flush)) first writes a
/// release record (SPEC.md §6.2), so that the receiver lets go of its mapping and the pool
/// can delete or recycle the segment (which waits for every reader's lock, SPEC.md §7).
///
/// One sender per connection, and the receiver must be a session: a plain receiver refuses a
/// descriptor without its fd. Dropping the sender writes nothing (it holds no stream): the
/// receiver lets go when its session ends with the connection; [`flush`](Sender::flush)
/// first to release earlier. If the receiver failed to open a descriptor, it holds nothing
/// of that segment: [`forget`](Sender::forget) it so that the fd goes again.
///
/// ```
/// use std::os::unix::net::UnixStream;
/// use stridemap_shm::{OpenOptions, Order, Pool, PoolConfig, SegmentKind, Sender, socket::Session};
///
/// let pool = Pool::with_config(PoolConfig::default().kind(SegmentKind::Memfd))?;
/// let mut a = pool.alloc::<f64>(&[4], Order::C)?;
/// a.copy_from_slice(&[1.0, 2.0, 3.0, 4.0])?;
/// let a = a.freeze()?;
/// let (tx, rx) = UnixStream::pair()?;
/// let (mut sender, mut session) = (Sender::new(), Session::new(OpenOptions::new()));
/// sender.send(&tx, &a)?; // with the fd
/// let first = session.recv(&rx)?;
/// sender.send(&tx, &a)?; // alone: the session maps it already
/// let again = session.recv(&rx)?;
/// assert_eq!(again.as_ptr(), first.as_ptr());
/// drop((a, first, again));
/// assert_eq!(sender.flush(&tx)?, 1); // a release record
/// session.next(&rx)?;
/// assert!(session.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Sender {
    /// The segments (id, generation) handed on this connection, and their handles' lease.
    sent: HashMap<([u8; 16], u64), Weak<Lease>>,
    /// Release records not yet written.
    pending: Vec<Release>,
}

impl Sender {
    /// A sender for a new connection: it has handed nothing yet.
    ///
    /// ```
    /// assert_eq!(stridemap_shm::Sender::new().handed(), 0);
    /// ```
    pub fn new() -> Sender {
        Sender::default()
    }

    /// Sends `array`'s descriptor over `stream`, as [`send_view`](Sender::send_view).
    ///
    /// ```
    /// fn hand(s: &mut stridemap_shm::Sender, to: &std::os::unix::net::UnixStream,
    ///         a: &stridemap_shm::SharedArray<f64>) -> stridemap_shm::Result<()> {
    ///     s.send(to, a)
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`send_view`](Sender::send_view).
    pub fn send<T>(&mut self, stream: &UnixStream, array: &SharedArray<T>) -> Result<()> {
        self.send_view(stream, array, array.descriptor())
    }

    /// Sends `desc`, a read-only descriptor of a view of `array`, over `stream`: first the
    /// release records due, then the descriptor, with the segment's fd (for a memfd) only if
    /// this connection has not been handed this segment and generation yet.
    ///
    /// ```
    /// use stridemap_shm::{SharedArray, Slice, Sender};
    /// fn every_other_row(s: &mut Sender, to: &std::os::unix::net::UnixStream, a: &SharedArray<f64>)
    ///     -> Result<(), Box<dyn std::error::Error>> {
    ///     let rows = a.descriptor().layout().slice_axis(0, Slice::step(2))?;
    ///     s.send_view(to, a, &a.descriptor().to_builder().layout(&rows).build()?)?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotThisSegment`] if `desc` is not a read-only view of `array`'s segment's
    /// current use; [`Error::Io`] if the socket fails; [`Error::TooManyFiles`] and others of
    /// reopening the segment for the peer.
    pub fn send_view<T>(
        &mut self,
        stream: &UnixStream,
        array: &SharedArray<T>,
        desc: &ValidDescriptor,
    ) -> Result<()> {
        let own = array.descriptor();
        let key = match own.segment_id() {
            Some(id)
                if desc.segment_id() == Some(id)
                    && desc.generation() == own.generation()
                    && desc.mode() == Mode::ReadOnly =>
            {
                (id, own.generation())
            }
            _ => return Err(Error::NotThisSegment),
        };
        self.flush(stream)?;
        if self.sent.contains_key(&key) {
            return Ok(socket::send(stream, desc, None)?);
        }
        array.send_view(stream, desc)?;
        self.sent.insert(key, array.lease_weak());
        Ok(())
    }

    /// Says that the receiver may let go of `array`'s segment now, even while handles of it
    /// live (the receiver is done with it): the release record goes with the next send or
    /// [`flush`](Sender::flush), and the next descriptor of it takes its fd again. Whether
    /// this connection was handed it.
    ///
    /// ```
    /// use stridemap_shm::{Pool, PoolConfig, Sender};
    /// let pool = Pool::with_config(PoolConfig::default())?;
    /// let a = pool.share_arc(&std::sync::Arc::new(vec![1u8, 2]))?;
    /// assert!(!Sender::new().release(&a)); // never handed
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release<T>(&mut self, array: &SharedArray<T>) -> bool {
        let own = array.descriptor();
        let Some(id) = own.segment_id() else {
            return false;
        };
        let key = (id, own.generation());
        if self.sent.remove(&key).is_none() {
            return false;
        }
        self.pending.push(Release {
            segment_id: key.0,
            generation: key.1,
        });
        true
    }

    /// Writes the release records due (segments whose every handle was dropped, and those
    /// [`release`](Sender::release)d) over `stream`, in one write; how many. The receiver
    /// reads them with its session's `next` or `recv`.
    ///
    /// ```
    /// let (tx, _rx) = std::os::unix::net::UnixStream::pair()?;
    /// assert_eq!(stridemap_shm::Sender::new().flush(&tx)?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] if the socket fails (the records stay due).
    pub fn flush(&mut self, stream: &UnixStream) -> Result<usize> {
        self.collect();
        if self.pending.is_empty() {
            return Ok(0);
        }
        let mut bytes = Vec::with_capacity(self.pending.len() * RECORD_LEN);
        for r in &self.pending {
            bytes.extend_from_slice(&r.to_bytes());
        }
        (&*stream).write_all(&bytes).map_err(|source| Error::Io {
            context: "sending release records".into(),
            source,
        })?;
        Ok(std::mem::take(&mut self.pending).len())
    }

    /// How many release records are due (see [`flush`](Sender::flush)).
    ///
    /// ```
    /// assert_eq!(stridemap_shm::Sender::new().pending(), 0);
    /// ```
    pub fn pending(&mut self) -> usize {
        self.collect();
        self.pending.len()
    }

    /// How many segments this connection holds as far as the sender knows (handed, not yet
    /// released).
    ///
    /// ```
    /// assert_eq!(stridemap_shm::Sender::new().handed(), 0);
    /// ```
    pub fn handed(&self) -> usize {
        self.sent.len()
    }

    /// Forgets every segment handed and every release due: the next descriptor of each goes
    /// with its fd again. For a receiver that holds nothing (its session failed, or a new
    /// connection).
    ///
    /// ```
    /// let mut s = stridemap_shm::Sender::new();
    /// s.forget();
    /// assert_eq!(s.handed(), 0);
    /// ```
    pub fn forget(&mut self) {
        self.sent.clear();
        self.pending.clear();
    }

    /// Moves the segments whose every handle is gone to the releases due.
    fn collect(&mut self) {
        let pending = &mut self.pending;
        self.sent.retain(|k, lease| {
            let alive = lease.strong_count() > 0;
            if !alive {
                pending.push(Release {
                    segment_id: k.0,
                    generation: k.1,
                });
            }
            alive
        });
    }
}
