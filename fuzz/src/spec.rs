//! SPEC.md's two wire forms, written from the document alone: the byte table of §2, the
//! CRC-32C of §2.3 and the postcard primitives of §4. The decoders under test are compared
//! with this, so it shares no code with `stridemap-core`.

/// Everything a descriptor says, as SPEC.md names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fields {
    /// (major, minor).
    pub version: (u16, u16),
    /// numpy typestr: byte order, kind, decimal itemsize (e.g. `<f8`).
    pub typestr: String,
    /// Order flag: false = C, true = F.
    pub fortran: bool,
    /// Mode code: 0 = `r`, 1 = `r+`, 2 = `c`.
    pub mode: u8,
    /// Source flag: false = path, true = fd.
    pub fd: bool,
    /// The path (empty for an fd source).
    pub path: String,
    /// Length of each axis.
    pub shape: Vec<u64>,
    /// Stride of each axis in bytes.
    pub strides: Vec<i64>,
    /// Offset of element (0, …, 0) from the buffer's start.
    pub offset: u64,
    /// Offset of the buffer in the file.
    pub buffer_offset: u64,
    /// Length of the buffer.
    pub buffer_len: u64,
    /// The file's length.
    pub file_len: u64,
    /// `st_dev`.
    pub device: u64,
    /// `st_ino`.
    pub inode: u64,
    /// Segment generation.
    pub generation: u64,
    /// Segment id.
    pub segment_id: [u8; 16],
}

/// CRC-32C (§2.3): Castagnoli polynomial, reflected, initial value and final XOR all ones;
/// one bit at a time.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The 1024-byte fixed record of §2, checksum included. The typestr must be two bytes and
/// digits that fit a u32; at most 32 axes; a path of at most 256 bytes.
pub fn fixed(f: &Fields) -> [u8; 1024] {
    let mut r = [0u8; 1024];
    let mut put = |at: usize, bytes: &[u8]| r[at..at + bytes.len()].copy_from_slice(bytes);
    let ts = f.typestr.as_bytes();
    let itemsize: u32 = f.typestr[2..].parse().expect("a decimal itemsize");
    let flags = u32::from(f.fortran) | u32::from(f.mode) << 1 | u32::from(f.fd) << 3;
    put(0, b"\x89SMD\r\n\x1a\n");
    put(8, &f.version.0.to_le_bytes());
    put(10, &f.version.1.to_le_bytes());
    put(12, &flags.to_le_bytes());
    put(16, &ts[..2]);
    put(18, &[f.shape.len() as u8]);
    put(20, &itemsize.to_le_bytes());
    put(24, &(f.path.len() as u16).to_le_bytes());
    put(32, &f.buffer_offset.to_le_bytes());
    put(40, &f.buffer_len.to_le_bytes());
    put(48, &f.offset.to_le_bytes());
    put(56, &f.file_len.to_le_bytes());
    put(64, &f.device.to_le_bytes());
    put(72, &f.inode.to_le_bytes());
    put(80, &f.generation.to_le_bytes());
    put(88, &f.segment_id);
    for (k, (d, s)) in f.shape.iter().zip(&f.strides).enumerate() {
        put(128 + 8 * k, &d.to_le_bytes());
        put(384 + 8 * k, &s.to_le_bytes());
    }
    put(640, f.path.as_bytes());
    let crc = crc32c(&r[..1020]);
    r[1020..].copy_from_slice(&crc.to_le_bytes());
    r
}

/// The compact form of §4.
pub fn compact(f: &Fields) -> Vec<u8> {
    let mut out = b"\x89SMC".to_vec();
    varint(&mut out, u64::from(f.version.0));
    varint(&mut out, u64::from(f.version.1));
    string(&mut out, &f.typestr);
    varint(&mut out, u64::from(f.fortran));
    varint(&mut out, u64::from(f.mode));
    if f.fd {
        varint(&mut out, 1);
    } else {
        varint(&mut out, 0);
        string(&mut out, &f.path);
    }
    varint(&mut out, f.shape.len() as u64);
    for &d in &f.shape {
        varint(&mut out, d);
    }
    varint(&mut out, f.strides.len() as u64);
    for &s in &f.strides {
        varint(&mut out, ((s << 1) ^ (s >> 63)) as u64);
    }
    for v in [
        f.offset,
        f.buffer_offset,
        f.buffer_len,
        f.file_len,
        f.device,
        f.inode,
        f.generation,
    ] {
        varint(&mut out, v);
    }
    out.extend_from_slice(&f.segment_id);
    out
}

/// Unsigned LEB128.
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Varint byte length, then the bytes.
fn string(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}
