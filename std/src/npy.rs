//! `.npy` files: read the header (format 1.0, 2.0, 3.0) without evaluating anything and
//! describe the data where it lies; write any view as a contiguous C-order `.npy`.

use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use stridemap_core::{Builder, DType, Layout, Order, ValidDescriptor};

use crate::{ByteView, Error, Result, ViewError};

/// numpy's magic string.
pub const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// numpy's default cap on the header length (`np.load(max_header_size=10000)`).
pub const MAX_HEADER_LEN: usize = 10_000;

/// What a `.npy` header says.
///
/// ```
/// use stridemap::npy::Header;
/// let mut file = Vec::new();
/// file.extend_from_slice(b"\x93NUMPY\x01\x00\x46\x00");
/// file.extend_from_slice(b"{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }");
/// file.resize(10 + 0x46 - 1, b' ');
/// file.push(b'\n');
/// let h = Header::parse(&file)?;
/// assert_eq!((h.dtype.typestr().as_str(), h.shape.as_slice(), h.fortran_order, h.data_offset), ("<f8", &[3, 4][..], false, 80));
/// # Ok::<(), stridemap::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version (major, minor).
    pub version: (u8, u8),
    /// Element type.
    pub dtype: DType,
    /// Whether the data is in Fortran order.
    pub fortran_order: bool,
    /// Length of each axis.
    pub shape: Vec<u64>,
    /// Byte offset of the data in the file.
    pub data_offset: u64,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Npy {
        reason: reason.into(),
    }
}

impl Header {
    /// Parses the header at the start of `bytes` (which must hold at least the whole header).
    ///
    /// # Errors
    /// [`Error::Npy`] saying what is wrong with the header.
    pub fn parse(bytes: &[u8]) -> Result<Header> {
        Header::parse_with_limit(bytes, MAX_HEADER_LEN)
    }

    /// As [`Header::parse`], accepting headers up to `max_len` bytes.
    ///
    /// # Errors
    /// [`Error::Npy`] saying what is wrong with the header.
    pub fn parse_with_limit(bytes: &[u8], max_len: usize) -> Result<Header> {
        let rest = bytes
            .strip_prefix(NPY_MAGIC)
            .ok_or_else(|| bad("not a .npy file (bad magic)"))?;
        let (&[major, minor], rest) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| bad("truncated before the version"))?;
        let (len, rest, prefix) = match major {
            1 => {
                let (l, rest) = rest
                    .split_first_chunk::<2>()
                    .ok_or_else(|| bad("truncated header length"))?;
                (usize::from(u16::from_le_bytes(*l)), rest, 10)
            }
            2 | 3 => {
                let (l, rest) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| bad("truncated header length"))?;
                (u32::from_le_bytes(*l) as usize, rest, 12)
            }
            _ => return Err(bad(format!("unsupported format version {major}.{minor}"))),
        };
        if minor != 0 {
            return Err(bad(format!("unsupported format version {major}.{minor}")));
        }
        if len > max_len {
            return Err(bad(format!(
                "header of {len} bytes exceeds the {max_len}-byte limit (numpy's max_header_size)"
            )));
        }
        let text = rest.get(..len).ok_or_else(|| bad("truncated header"))?;
        let text = match major {
            3 => std::str::from_utf8(text).map_err(|_| bad("header is not UTF-8"))?,
            _ => std::str::from_utf8(text)
                .ok()
                .filter(|t| t.is_ascii())
                .ok_or_else(|| bad("header is not ASCII (format 1.0/2.0)"))?,
        };
        let dict = parse_dict(text)?;
        Ok(Header {
            version: (major, minor),
            dtype: dict.dtype,
            fortran_order: dict.fortran_order,
            shape: dict.shape,
            data_offset: (prefix + len) as u64,
        })
    }

    /// Reads and parses the header from the start of `reader`.
    ///
    /// # Errors
    /// [`Error::Npy`], or [`Error::Io`] if reading fails.
    pub fn read(reader: &mut impl Read) -> Result<Header> {
        let io = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => bad("truncated header"),
            _ => Error::io("reading the .npy header", e),
        };
        let mut head = [0u8; 12];
        reader.read_exact(&mut head[..10]).map_err(io)?;
        let (prefix, len) = match head[6] {
            1 => (10, usize::from(u16::from_le_bytes([head[8], head[9]]))),
            2 | 3 => {
                reader.read_exact(&mut head[10..12]).map_err(io)?;
                (
                    12,
                    u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize,
                )
            }
            _ => return Header::parse(&head[..10]),
        };
        if len > MAX_HEADER_LEN {
            return Header::parse(&head[..prefix]);
        }
        let mut all = head[..prefix].to_vec();
        all.resize(prefix + len, 0);
        reader.read_exact(&mut all[prefix..]).map_err(io)?;
        Header::parse(&all)
    }
}

/// The descriptor of the data of the `.npy` file at `path`, where it lies (no copy): the
/// buffer is the data section, the identity is the file's.
///
/// ```no_run
/// let d = stridemap::npy::describe("/data/weights.npy")?;
/// println!("{} {:?}", d.dtype(), d.shape());
/// # Ok::<(), stridemap::Error>(())
/// ```
///
/// # Errors
/// [`Error::Npy`], [`Error::Io`], or a descriptor error.
pub fn describe(path: impl AsRef<Path>) -> Result<ValidDescriptor> {
    let path = path.as_ref();
    let path = std::fs::canonicalize(path)
        .map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
    // O_NONBLOCK: a FIFO must not block the open before the type check refuses it.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(&path)
        .map_err(|e| Error::Open {
            path: path.clone(),
            source: e,
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    if !meta.file_type().is_file() {
        return Err(Error::NotRegularFile {
            file_type: meta.mode() & 0o170000,
        });
    }
    let header = Header::read(&mut file)?;
    let order = if header.fortran_order {
        Order::F
    } else {
        Order::C
    };
    let path_str = path
        .to_str()
        .ok_or_else(|| bad(format!("path {} is not UTF-8", path.display())))?;
    let nbytes = Layout::contiguous(header.dtype.itemsize(), &header.shape, order)?.nbytes();
    let end = header.data_offset.checked_add(nbytes);
    if end.is_none_or(|end| end > meta.len()) {
        return Err(bad(format!(
            "the file is {} bytes but its header promises {nbytes} bytes of data after byte {}",
            meta.len(),
            header.data_offset
        )));
    }
    Ok(Builder::new(header.dtype, &header.shape)
        .order(order)
        .buffer(header.data_offset, nbytes)
        .file_len(meta.len())
        .identity(meta.dev(), meta.ino())
        .path(path_str)
        .build()?)
}

/// Writes `view` as a `.npy` (format 1.0, or 2.0 for headers over 64 KiB): its dtype and
/// shape, the elements packed in C order.
///
/// ```
/// use stridemap::{ByteView, npy};
/// use stridemap::{DType, Layout, Order};
/// let data: Vec<u8> = (0..6).collect();
/// let v = ByteView::new(&data, Layout::contiguous(1, &[2, 3], Order::C)?, DType::parse("|u1")?)?;
/// let mut out = Vec::new();
/// npy::write(&v.t(), &mut out)?;
/// let h = npy::Header::parse(&out)?;
/// assert_eq!(h.shape, [3, 2]);
/// assert_eq!(&out[h.data_offset as usize..], &[0, 3, 1, 4, 2, 5]);
/// # Ok::<(), stridemap::Error>(())
/// ```
///
/// # Errors
/// [`Error::Io`] if writing fails.
pub fn write(view: &ByteView<'_>, out: &mut impl Write) -> Result<()> {
    let io_err = |e: io::Error| Error::io("writing .npy", e);
    out.write_all(&header_bytes(view.dtype(), view.layout().shape()))
        .map_err(io_err)?;
    if view.layout().is_c_contiguous() {
        let span = view.layout().span();
        let data = view
            .buffer()
            .get(span.start as usize..span.end as usize)
            .ok_or(ViewError::BufferTooShort {
                needed: span.end,
                len: view.buffer().len() as u64,
            })?;
        return out.write_all(data).map_err(io_err);
    }
    let mut buf = io::BufWriter::with_capacity(1 << 20, out);
    for e in view.elements() {
        buf.write_all(e).map_err(io_err)?;
    }
    buf.flush().map_err(io_err)
}

/// Writes the array `m` describes as a `.npy`, like [`write()`], for any mapping: the elements
/// are copied out a chunk at a time (never lent as references, so another process writing the
/// file meanwhile changes values, not soundness), without holding the whole array in memory.
/// Unless the kernel keeps the file from shrinking (a frozen mapping) or the map is private
/// (`c`), they are read from the file with `pread` rather than from the map, so that a file
/// truncated meanwhile is an error here rather than a `SIGBUS` that kills the process.
///
/// # Errors
/// [`Error::Io`] if writing fails, or reading the file does (it was truncated).
pub fn write_mapping(m: &crate::Mapping, out: &mut impl Write) -> Result<()> {
    let io_err = |e: io::Error| Error::io("writing .npy", e);
    let desc = m.descriptor();
    let layout = desc.layout();
    let mut src = match m.file_to_read().filter(|_| !m.is_frozen()) {
        Some(file) => Source::File(Window::new(file, desc.buffer_offset(), desc.buffer_len())),
        None => Source::Map(m.volatile_bytes()),
    };
    out.write_all(&header_bytes(desc.dtype(), desc.shape()))
        .map_err(io_err)?;
    let mut chunk = vec![0u8; 1 << 20];
    if layout.is_c_contiguous() {
        let mut at = usize::try_from(layout.span().start).map_err(|_| ViewError::TooLarge)?;
        let end = usize::try_from(layout.span().end).map_err(|_| ViewError::TooLarge)?;
        while at < end {
            let n = (end - at).min(chunk.len());
            let part = chunk.get_mut(..n).ok_or(ViewError::TooLarge)?;
            src.copy(at, part)?;
            out.write_all(part).map_err(io_err)?;
            at += n;
        }
        return Ok(());
    }
    let size = desc.dtype().itemsize() as usize;
    let per_chunk = (chunk.len() / size.max(1)).max(1);
    let mut filled = 0;
    for off in layout.offsets() {
        if filled + size > chunk.len() || filled / size.max(1) >= per_chunk {
            out.write_all(chunk.get(..filled).unwrap_or_default())
                .map_err(io_err)?;
            filled = 0;
        }
        let off = usize::try_from(off).map_err(|_| ViewError::TooLarge)?;
        let dst = chunk
            .get_mut(filled..filled + size)
            .ok_or(ViewError::TooLarge)?;
        src.copy(off, dst)?;
        filled += size;
    }
    out.write_all(chunk.get(..filled).unwrap_or_default())
        .map_err(io_err)
}

/// Where [`write_mapping`] copies elements from.
enum Source<'a> {
    /// The map (frozen, private or empty).
    Map(crate::sys::VolatileBytes<'a>),
    /// The file, through a window.
    File(Window<'a>),
}

impl Source<'_> {
    /// Copies the buffer's bytes at `off` into `dst`.
    fn copy(&mut self, off: usize, dst: &mut [u8]) -> Result<()> {
        match self {
            Source::Map(bytes) => bytes.copy_to(off, dst).ok_or_else(|| {
                ViewError::BufferTooShort {
                    needed: (off + dst.len()) as u64,
                    len: bytes.len() as u64,
                }
                .into()
            }),
            Source::File(w) => w.copy(off as u64, dst),
        }
    }
}

/// A window of up to 1 MiB of a file's buffer, read with `pread`: elements near each other
/// (forwards or backwards) cost one read per window, not one each.
struct Window<'a> {
    file: &'a std::fs::File,
    /// The buffer's offset in the file, and its length.
    base: u64,
    len: u64,
    /// The window's bytes and their offset in the buffer.
    bytes: Vec<u8>,
    at: u64,
}

impl<'a> Window<'a> {
    const SIZE: u64 = 1 << 20;

    fn new(file: &'a std::fs::File, base: u64, len: u64) -> Window<'a> {
        Window {
            file,
            base,
            len,
            bytes: Vec::new(),
            at: 0,
        }
    }

    fn read(&self, at: u64, dst: &mut [u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let pos = self.base.saturating_add(at);
        self.file.read_exact_at(dst, pos).map_err(|e| {
            let why = if e.kind() == io::ErrorKind::UnexpectedEof {
                "the file is shorter than when it was opened: truncated while being read"
                    .to_string()
            } else {
                e.to_string()
            };
            Error::io(
                format!("reading {} bytes at offset {pos} of the file", dst.len()),
                io::Error::new(e.kind(), why),
            )
        })
    }

    fn copy(&mut self, off: u64, dst: &mut [u8]) -> Result<()> {
        let n = dst.len() as u64;
        if n >= Window::SIZE {
            return self.read(off, dst);
        }
        let held = self.at..self.at + self.bytes.len() as u64;
        if !(held.contains(&off) && off + n <= held.end) {
            // Backwards (a reversed axis): the window ends at this element.
            let at = if off < self.at {
                (off + n).saturating_sub(Window::SIZE)
            } else {
                off
            };
            let len = Window::SIZE.min(self.len.saturating_sub(at)).max(n);
            let mut bytes = std::mem::take(&mut self.bytes);
            bytes.resize(len as usize, 0);
            self.read(at, &mut bytes)?;
            (self.bytes, self.at) = (bytes, at);
        }
        let from = (off - self.at) as usize;
        let src = self
            .bytes
            .get(from..from + dst.len())
            .ok_or(ViewError::TooLarge)?;
        dst.copy_from_slice(src);
        Ok(())
    }
}

/// Writes `view` to a new file at `path` (fails if it exists).
///
/// # Errors
/// [`Error::Io`] if the file cannot be created or written.
pub fn write_file(view: &ByteView<'_>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    write(view, &mut file)?;
    file.sync_all()
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
}

/// Magic, version, length and the header dict padded so the data starts 64-byte aligned.
fn header_bytes(dtype: DType, shape: &[u64]) -> Vec<u8> {
    let mut dims = String::new();
    for d in shape {
        dims.push_str(&d.to_string());
        dims.push_str(", ");
    }
    if shape.len() > 1 {
        dims.truncate(dims.len() - 2);
    } else if shape.len() == 1 {
        dims.truncate(dims.len() - 1);
    }
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({dims}), }}",
        dtype.typestr()
    );
    let (version, prefix) = if dict.len() + 1 + 10 <= usize::from(u16::MAX) {
        (1u8, 10)
    } else {
        (2u8, 12)
    };
    let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
    let header_len = total - prefix;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// The three keys of a header dict.
struct Dict {
    dtype: DType,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// Parses `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }` — a Python dict
/// literal with exactly these keys, in any order — by hand: nothing is evaluated.
fn parse_dict(text: &str) -> Result<Dict> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        match key {
            "descr" if descr.is_none() => descr = Some(p.descr()?),
            "fortran_order" if fortran.is_none() => fortran = Some(p.boolean()?),
            "shape" if shape.is_none() => shape = Some(p.tuple()?),
            other => {
                return Err(bad(format!(
                    "unexpected or repeated key {other:?} in the header"
                )));
            }
        }
        p.ws();
        if !p.eat(b',') {
            p.ws();
            p.expect(b'}')?;
            break;
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(bad("trailing characters after the header dict"));
    }
    Ok(Dict {
        dtype: descr.ok_or_else(|| bad("header has no 'descr'"))?,
        fortran_order: fortran.ok_or_else(|| bad("header has no 'fortran_order'"))?,
        shape: shape.ok_or_else(|| bad("header has no 'shape'"))?,
    })
}

struct Parser<'s> {
    s: &'s [u8],
    i: usize,
}

impl<'s> Parser<'s> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(bad(format!(
                "expected {:?} at byte {} of the header",
                char::from(c),
                self.i
            )))
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A quoted string without escapes (all numpy writes).
    fn string(&mut self) -> Result<&'s str> {
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(bad(format!(
                    "expected a string at byte {} of the header",
                    self.i
                )));
            }
        };
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == q {
                let s = self.s.get(start..self.i).unwrap_or_default();
                self.i += 1;
                return std::str::from_utf8(s).map_err(|_| bad("string is not UTF-8"));
            }
            if c == b'\\' {
                return Err(bad("escapes in header strings are not supported"));
            }
            self.i += 1;
        }
        Err(bad("unterminated string in the header"))
    }

    fn descr(&mut self) -> Result<DType> {
        if self.peek() == Some(b'[') {
            return Err(bad(
                "structured dtypes (a list descr) are not supported; save a plain dtype",
            ));
        }
        let s = self.string()?;
        DType::parse(s).map_err(|e| bad(format!("unsupported dtype {s:?}: {e}")))
    }

    fn boolean(&mut self) -> Result<bool> {
        let rest = self.s.get(self.i..).unwrap_or_default();
        for (word, value) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if rest.starts_with(word) {
                self.i += word.len();
                return Ok(value);
            }
        }
        Err(bad("fortran_order must be True or False"))
    }

    /// `()`, `(5,)`, `(3, 4)`, tolerating Python 2's `L` suffix.
    fn tuple(&mut self) -> Result<Vec<u64>> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                return Ok(dims);
            }
            let start = self.i;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(self.s.get(start..self.i).unwrap_or_default())
                .unwrap_or_default();
            let d: u64 = digits
                .parse()
                .map_err(|_| bad(format!("bad shape entry at byte {start} of the header")))?;
            if dims.len() == stridemap_core::MAX_NDIM {
                return Err(bad("more than 32 axes"));
            }
            dims.push(d);
            self.eat(b'L');
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(version: u8, dict: &str) -> Vec<u8> {
        let mut out = NPY_MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out
    }

    #[test]
    fn headers_numpy_writes() {
        for (v, dict, shape, f) in [
            (
                1,
                "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }      \n",
                vec![3, 4],
                false,
            ),
            (
                1,
                "{'descr': '|u1', 'fortran_order': True, 'shape': (5,), }\n",
                vec![5],
                true,
            ),
            (
                2,
                "{'descr': '>i4', 'fortran_order': False, 'shape': (), }\n",
                vec![],
                false,
            ),
            (
                3,
                "{'shape': (2L, 0L), 'descr': '<c16', 'fortran_order': False}\n",
                vec![2, 0],
                false,
            ),
            (
                1,
                "{\"descr\":\"|V12\",\"fortran_order\":False,\"shape\":(1,2,3)}",
                vec![1, 2, 3],
                false,
            ),
        ] {
            let h = Header::parse(&file(v, dict)).unwrap();
            assert_eq!((h.shape, h.fortran_order), (shape, f), "{dict}");
        }
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        for dict in [
            "",
            "{",
            "{'descr': '<f8'}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), 'x': 1}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3, -4)}",
            "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (3,)}",
            "{'descr': 'O', 'fortran_order': False, 'shape': (3,)}",
            "{'descr': '<U3', 'fortran_order': False, 'shape': (3,)}",
            "{'descr': '<f8', 'fortran_order': Maybe, 'shape': (3,)}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3,)} junk",
            "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (3,)}",
            "{'descr': '<f\\x38', 'fortran_order': False, 'shape': (3,)}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,)}",
        ] {
            assert!(Header::parse(&file(1, dict)).is_err(), "{dict}");
        }
        assert!(Header::parse(b"\x93NUMPY").is_err());
        assert!(Header::parse(b"\x93NUMPY\x04\x00\x00\x00").is_err());
        assert!(Header::parse(b"\x93NUMPY\x01\x00\xff\xff{").is_err());
        let long = format!(
            "{{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }}{}\n",
            " ".repeat(20_000)
        );
        assert!(Header::parse(&file(2, &long)).is_err());
        assert!(Header::parse_with_limit(&file(2, &long), 30_000).is_ok());
    }

    #[test]
    fn written_headers_are_aligned_and_parse() {
        for shape in [&[][..], &[7], &[2, 3], &[1, 1, 1, 1]] {
            let bytes = header_bytes(DType::parse("<f4").unwrap(), shape);
            assert_eq!(bytes.len() % 64, 0);
            let h = Header::parse(&bytes).unwrap();
            assert_eq!(
                (h.shape.as_slice(), h.data_offset as usize),
                (shape, bytes.len())
            );
        }
    }
}
