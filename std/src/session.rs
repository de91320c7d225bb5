//! A receiver's session on one connection (SPEC.md §6 "Reusing a mapping", case 4, and
//! §6.2): the mappings of the segments its peer handed on this connection, kept until the
//! peer releases them or the session ends, so that a later descriptor of the same segment and
//! generation needs no fd and no new map.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use rustix::fs::{SealFlags, fcntl_get_seals, fstat};
use stridemap_core::{Mode, Release, Source, ValidDescriptor, decode};

use crate::mapping::ReusableRegion;
use crate::open::{check_allocated, check_file, grant, lock_and_check_header, map};
use crate::socket::{Incoming, recv_record};
use crate::{Error, Mapping, OpenOptions, Result};

/// The receiving end of one connection that keeps what it was handed: the first descriptor
/// of a segment (its fd, for a memfd) is opened with every check of
/// [`OpenOptions::open`]; the session then holds that mapping, keyed by the segment id and
/// generation, and serves later descriptors of the same segment from it — without an fd,
/// after O5 and a comparison of the record's device, inode, file length and buffer with what
/// the mapping was checked with (and `fstat` again for a file that can still change size).
/// It holds each mapping (and so the segment's shared lock, SPEC.md §7) until the sender's
/// release record (§6.2) says to let go, or the session is dropped: one session per
/// connection, dropped when the connection ends. A descriptor without its fd is served only
/// from this session, never from another connection's, and never found by device and inode.
///
/// The sender must know it talks to a session (stridemap-shm's `Sender`): a plain
/// [`socket::recv`](crate::socket::recv) refuses an fd descriptor without its fd
/// ([`Error::MissingFd`]) and a release record ([`Error::Descriptor`], bad magic).
///
/// ```
/// use std::os::unix::net::UnixStream;
/// use stridemap::{Builder, DType, OpenOptions, socket};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().canonicalize()?.join("a.f64");
/// std::fs::write(&path, 1.5f64.to_le_bytes().repeat(4))?;
/// let desc = Builder::new(DType::parse("<f8")?, &[4]).path(path.to_str().unwrap()).build()?;
/// let (tx, rx) = UnixStream::pair()?;
/// socket::send(&tx, &desc, None)?;
///
/// let mut session = socket::Session::new(OpenOptions::new().allow_root(dir.path()));
/// let m = session.recv(&rx)?;
/// assert_eq!(m.volatile_view::<f64>()?.to_vec(), [1.5; 4]);
/// assert!(session.is_empty()); // a plain file, not a segment: nothing to hold
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Session {
    opts: OpenOptions,
    held: HashMap<([u8; 16], u64), Held>,
}

/// What a [`Session`] read off its connection: a descriptor, opened, or a release.
///
/// ```
/// use stridemap::socket::Event;
/// fn is_release(e: &Event) -> bool {
///     matches!(e, Event::Released(_))
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
#[allow(
    clippy::large_enum_variant,
    reason = "an event is matched at once and not kept; boxing the mapping buys nothing"
)]
pub enum Event {
    /// A descriptor, opened (or served from a held mapping).
    Mapped(Mapping),
    /// A release record: the session let go of that segment's mapping, if it held one.
    Released(Release),
}

/// A mapping the session holds, and what it was checked with.
#[derive(Debug)]
struct Held {
    map: HeldMap,
    /// The mode granted at the first open (O5).
    mode: Mode,
    /// The file's (device, inode), from `fstat` of the file the mapping holds.
    key: (u64, u64),
    /// The file's length when checked (O7).
    file_len: u64,
    /// Sealed against shrinking and growing: its length cannot change.
    fixed_size: bool,
    /// Sealed against shrinking: O12 applies.
    sealed_shrink: bool,
    /// The largest buffer O12 was checked for.
    checked_len: u64,
    /// The path it was opened by, for a path descriptor.
    path: Option<PathBuf>,
}

#[derive(Debug)]
enum HeldMap {
    /// A read-only region (mode `r`).
    Region(Arc<ReusableRegion>),
    /// The checked open file description of an `r+` or `c` mapping, mapped anew each time.
    File(File),
}

impl HeldMap {
    fn file(&self) -> &File {
        match self {
            HeldMap::Region(r) => r.file(),
            HeldMap::File(f) => f,
        }
    }
}

impl Session {
    /// A session that opens what comes under `opts`.
    ///
    /// ```
    /// let s = stridemap::socket::Session::new(stridemap::OpenOptions::new());
    /// assert_eq!(s.len(), 0);
    /// ```
    pub fn new(opts: OpenOptions) -> Session {
        Session {
            opts,
            held: HashMap::new(),
        }
    }

    /// The options it opens with.
    ///
    /// ```
    /// let s = stridemap::socket::Session::new(stridemap::OpenOptions::new());
    /// assert_eq!(s.options().wanted_mode(), stridemap::Mode::ReadOnly);
    /// ```
    pub fn options(&self) -> &OpenOptions {
        &self.opts
    }

    /// Receives records from `stream` until a descriptor comes (applying the release records
    /// before it) and opens it.
    ///
    /// ```
    /// fn total(s: &mut stridemap::socket::Session, stream: &std::os::unix::net::UnixStream)
    ///     -> Result<f64, stridemap::Error> {
    ///     Ok(s.recv(stream)?.volatile_view::<f64>()?.iter().sum())
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`Session::next`].
    pub fn recv(&mut self, stream: &UnixStream) -> Result<Mapping> {
        loop {
            if let Event::Mapped(m) = self.next(stream)? {
                return Ok(m);
            }
        }
    }

    /// Receives one record from `stream`: a descriptor (opened, see [`Session::open`]) or a
    /// release record (applied).
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use stridemap::{OpenOptions, Release, socket::{Event, Session}};
    /// let (tx, rx) = UnixStream::pair()?;
    /// std::io::Write::write_all(&mut &tx, &Release { segment_id: [1; 16], generation: 1 }.to_bytes())?;
    /// let mut s = Session::new(OpenOptions::new());
    /// assert!(matches!(s.next(&rx)?, Event::Released(_))); // nothing held: nothing to do
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] if the socket fails or closes mid-record; [`Error::BadRelease`] for a
    /// release record that fails a check, [`Error::UnexpectedFd`] for one that came with an
    /// fd (closed); [`Error::Descriptor`] for a record that is neither; those of
    /// [`Session::open`].
    pub fn next(&mut self, stream: &UnixStream) -> Result<Event> {
        let (bytes, fd) = recv_record(stream)?;
        if Release::is_release(&bytes) {
            if fd.is_some() {
                return Err(Error::UnexpectedFd);
            }
            let r = Release::decode(&bytes).map_err(Error::BadRelease)?;
            self.release(r.segment_id, r.generation);
            return Ok(Event::Released(r));
        }
        let descriptor = decode(&bytes)?;
        self.open(Incoming { descriptor, fd }).map(Event::Mapped)
    }

    /// Opens a received descriptor. A descriptor of a segment this session holds (same id and
    /// generation) that came without an fd, or names the same path and file (device, inode,
    /// length), is served from the held mapping; any other is opened with [`OpenOptions::open`], and a segment's mapping is
    /// then held (replacing one held for the same segment and generation).
    ///
    /// ```
    /// use stridemap::{Builder, DType, OpenOptions, socket::{Incoming, Session}};
    /// let desc = Builder::new(DType::parse("<f8")?, &[4]).fd().segment_id([3; 16]).generation(1).build()?;
    /// let mut s = Session::new(OpenOptions::new());
    /// let err = s.open(Incoming { descriptor: desc, fd: None }).unwrap_err();
    /// assert_eq!(err.rule(), Some("S1")); // never handed on this connection
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NotInSession`] (S1) for a segment's fd descriptor without its fd that this
    /// session does not hold; [`Error::NotAsHeld`] (S2) when it holds the segment but the
    /// descriptor's device, inode, file length, buffer or granted mode differ from those the
    /// mapping was checked with; [`Error::MissingFd`] for an fd descriptor of a file that is
    /// not a segment, without its fd; for a held named file whose size can change, O6–O8
    /// again ([`Error::LengthMismatch`] once it was truncated); O12 for a larger buffer than
    /// checked; O10 and O11 for an `r+` or `c` mapping (mapped anew); otherwise those of
    /// [`OpenOptions::open`].
    pub fn open(&mut self, incoming: Incoming) -> Result<Mapping> {
        let Incoming {
            descriptor: desc,
            fd,
        } = incoming;
        let key = desc
            .segment_id()
            .filter(|_| desc.generation() != 0)
            .map(|id| (id, desc.generation()));
        if fd.is_none()
            && let Some(k) = key
        {
            match desc.source() {
                Source::Fd => return self.serve(&desc, k),
                Source::Path => {
                    // The same path, naming the file the mapping holds (else it is opened
                    // anew, every check made: a file replaced at that path is not this one).
                    let same_file = self.held.get(&k).is_some_and(|h| {
                        h.path.as_deref().and_then(|p| p.to_str()) == desc.path()
                            && desc.identity() == Some(h.key)
                            && desc.file_len() == h.file_len
                    });
                    if same_file {
                        return self.serve(&desc, k);
                    }
                }
            }
        }
        let m = self.opts.open((&desc, fd))?;
        if let Some(k) = key {
            self.hold(k, &desc, &m)?;
        }
        Ok(m)
    }

    /// Lets go of the mapping of generation `generation` of segment `segment_id`, if held
    /// (what a release record does); whether one was. Views still open keep theirs.
    ///
    /// ```
    /// let mut s = stridemap::socket::Session::new(stridemap::OpenOptions::new());
    /// assert!(!s.release([1; 16], 1));
    /// ```
    pub fn release(&mut self, segment_id: [u8; 16], generation: u64) -> bool {
        self.held.remove(&(segment_id, generation)).is_some()
    }

    /// How many segments' mappings it holds.
    ///
    /// ```
    /// assert_eq!(stridemap::socket::Session::new(stridemap::OpenOptions::new()).len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether it holds none.
    ///
    /// ```
    /// assert!(stridemap::socket::Session::new(stridemap::OpenOptions::new()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Lets go of every mapping (as when the connection ends).
    ///
    /// ```
    /// let mut s = stridemap::socket::Session::new(stridemap::OpenOptions::new());
    /// s.clear();
    /// assert!(s.is_empty());
    /// ```
    pub fn clear(&mut self) {
        self.held.clear();
    }

    /// Keeps the mapping `m` just opened for `desc` (nothing, for an empty buffer).
    fn hold(&mut self, k: ([u8; 16], u64), desc: &ValidDescriptor, m: &Mapping) -> Result<()> {
        let map = if let Some(r) = m.reusable_region() {
            HeldMap::Region(r.clone())
        } else if let Some(f) = m.own_file() {
            // The same open file description (a dup): it keeps the lock the open took.
            HeldMap::File(f.try_clone().map_err(|e| Error::io("dup", e))?)
        } else {
            self.held.remove(&k);
            return Ok(());
        };
        let st = fstat(map.file()).map_err(|e| Error::io("fstat", e.into()))?;
        let seals = fcntl_get_seals(map.file()).unwrap_or(SealFlags::empty());
        let path = desc
            .path()
            .filter(|_| desc.source() == Source::Path)
            .map(PathBuf::from);
        self.held.insert(
            k,
            Held {
                map,
                mode: m.mode(),
                key: (st.st_dev, st.st_ino),
                file_len: st.st_size as u64,
                fixed_size: seals.contains(SealFlags::SHRINK | SealFlags::GROW),
                sealed_shrink: seals.contains(SealFlags::SHRINK),
                checked_len: desc.buffer_len(),
                path,
            },
        );
        Ok(())
    }

    /// Serves `desc` from the mapping held for `k` (SPEC.md §6 case 4).
    fn serve(&mut self, desc: &ValidDescriptor, k: ([u8; 16], u64)) -> Result<Mapping> {
        let held = self.held.get_mut(&k).ok_or(Error::NotInSession {
            segment_id: k.0,
            generation: k.1,
        })?;
        let mode = grant(desc, &self.opts)?;
        if mode != held.mode {
            return Err(Error::NotAsHeld {
                field: "mode granted",
            });
        }
        if desc.identity() != Some(held.key) {
            return Err(Error::NotAsHeld {
                field: "device and inode",
            });
        }
        if desc.file_len() != held.file_len {
            return Err(Error::NotAsHeld {
                field: "file length",
            });
        }
        let file = held.map.file();
        let mut st = None;
        if !held.fixed_size {
            // A file that can still change size (a named file): O6–O8 again.
            st = Some(check_file(file, desc)?);
        }
        if held.sealed_shrink && desc.buffer_len() > held.checked_len {
            let s = match st {
                Some(s) => s,
                None => check_file(file, desc)?,
            };
            check_allocated(file, &s, desc)?;
            st = Some(s);
            held.checked_len = desc.buffer_len();
        }
        if desc.buffer_len() == 0 {
            return Ok(Mapping::empty(desc.clone(), mode));
        }
        match &held.map {
            HeldMap::Region(r) => {
                let start = r
                    .covers(desc.buffer_offset(), desc.buffer_len())
                    .ok_or(Error::NotAsHeld { field: "buffer" })?;
                Ok(Mapping::reusable(desc.clone(), r.clone(), start))
            }
            HeldMap::File(f) => {
                // r+ or c: a new map of the held open file description, its header (O10:
                // buffer inside the data area) checked again under the lock it holds.
                let segment = lock_and_check_header(f, desc)?;
                let s = match st {
                    Some(s) => s,
                    None => check_file(f, desc)?,
                };
                let f = f.try_clone().map_err(|e| Error::io("dup", e))?;
                map(desc, mode, f, &s, segment, &self.opts)
            }
        }
    }
}
