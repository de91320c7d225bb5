//! The descriptor tools: describe, inspect, export, npy, gc.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use stridemap::{OpenOptions, npy as npyfile};
use stridemap_core::{
    Builder, COMPACT_MAGIC, COMPACT_MAX_LEN, DType, Mode, Order, RECORD_LEN, Source,
    ValidDescriptor, decode, decode_compact,
};

use crate::{CliResult, Failure};

/// `stridemap describe` arguments.
#[derive(Args, Debug)]
pub(crate) struct DescribeArgs {
    /// The file holding the array.
    file: PathBuf,
    /// numpy typestr, e.g. <f8, >i4, |b1, <c16, |V12.
    #[arg(long)]
    dtype: String,
    /// Axis lengths, comma-separated (empty for a 0-d array).
    #[arg(long, value_delimiter = ',', num_args = 0.., allow_negative_numbers = true)]
    shape: Vec<u64>,
    /// Strides in bytes, comma-separated (any sign: `--strides -16` and `--strides 8,-16`
    /// work); default: contiguous in --order. A length-0 or length-1 axis whose stride does
    /// not fit the buffer gets stride 0 (SPEC.md §9: the same array).
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        conflicts_with = "order"
    )]
    strides: Option<Vec<i64>>,
    /// Memory order used when no strides are given.
    #[arg(long, value_parser = ["C", "F"])]
    order: Option<String>,
    /// Byte offset of element (0, …, 0) from the start of the file.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    offset: u64,
    /// Byte offset of the enclosing buffer in the file (default 0).
    #[arg(long, requires = "buffer_len")]
    buffer_offset: Option<u64>,
    /// Length of the enclosing buffer (default: to the end of the file).
    #[arg(long)]
    buffer_len: Option<u64>,
    /// What consumers may do.
    #[arg(long, default_value = "r", value_parser = ["r", "r+", "c", "w+"])]
    mode: String,
    /// Write the compact (postcard) form instead of the fixed record.
    #[arg(long)]
    compact: bool,
    /// Where to write the descriptor.
    #[arg(short, long)]
    output: PathBuf,
}

/// Parses `1G`, `64M`, `512K` or a plain number of bytes.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("unknown size unit in {s:?} (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Writes to stdout, turning a closed pipe into an error instead of a panic.
pub(crate) fn out(text: &str) -> CliResult {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::other(format!("writing to stdout: {e}")))
}

/// Writes an output atomically: a temporary file in the target's folder, filled by `fill`,
/// then renamed over the target. An existing output is replaced; a symbolic link at the
/// target is replaced, never followed; a failure leaves no partial file. The file gets mode
/// 0644.
pub(crate) fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> CliResult,
) -> CliResult {
    let name = path
        .file_name()
        .ok_or_else(|| Failure::other(format!("{} names no file", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Failure::other(format!("creating a file in {}: {e}", dir.display())))?;
    fill(tmp.as_file_mut())?;
    let f = tmp.as_file();
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|()| f.sync_all())
        .map_err(|e| Failure::other(format!("writing {}: {e}", path.display())))?;
    tmp.persist(path)
        .map_err(|e| Failure::other(format!("replacing {}: {}", path.display(), e.error)))?;
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8]) -> CliResult {
    write_atomic(path, |f| {
        f.write_all(bytes)
            .map_err(|e| Failure::other(format!("writing {}: {e}", path.display())))
    })
}

/// Opens an input file without blocking (a FIFO must not hang the open) and refuses anything
/// but a regular file (a FIFO, a device such as /dev/zero, a folder).
fn open_input(path: &Path) -> CliResult<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(|e| Failure::other(format!("{}: {e}", path.display())))?;
    let meta = f
        .metadata()
        .map_err(|e| Failure::other(format!("{}: {e}", path.display())))?;
    if !meta.file_type().is_file() {
        return Err(Failure::other(format!(
            "{} is not a regular file (a FIFO, device or folder); give a file",
            path.display()
        )));
    }
    Ok(f)
}

/// The longest descriptor file there is: a fixed record, or the longest compact form.
const DESCRIPTOR_MAX: usize = if RECORD_LEN > COMPACT_MAX_LEN {
    RECORD_LEN
} else {
    COMPACT_MAX_LEN
};

pub(crate) fn describe(a: &DescribeArgs) -> CliResult {
    let path = std::fs::canonicalize(&a.file)
        .map_err(|e| Failure::other(format!("{}: {e}", a.file.display())))?;
    let meta = std::fs::metadata(&path)?;
    let path_str = path
        .to_str()
        .ok_or_else(|| Failure::other(format!("{} is not a UTF-8 path", path.display())))?;
    let dtype = DType::parse(&a.dtype)?;
    let mode: Mode = a.mode.parse()?;
    let order = match a.order.as_deref() {
        Some("F") => Order::F,
        _ => Order::C,
    };
    let buffer_offset = a.buffer_offset.unwrap_or(0);
    let buffer_len = match a.buffer_len {
        Some(n) => n,
        None => meta.len().checked_sub(buffer_offset).ok_or_else(|| {
            Failure::rule(format!(
                "--buffer-offset {buffer_offset} is past the end of the {}-byte file",
                meta.len()
            ))
        })?,
    };
    let offset = a.offset.checked_sub(buffer_offset).ok_or_else(|| {
        Failure::rule(format!(
            "R22: --offset {} is before the buffer, which starts at byte {buffer_offset}",
            a.offset
        ))
    })?;
    let build = |strides: Option<&[i64]>| {
        let mut b = Builder::new(dtype, &a.shape)
            .order(order)
            .offset(offset)
            .buffer(buffer_offset, buffer_len)
            .file_len(meta.len())
            .identity(meta.dev(), meta.ino())
            .mode(mode)
            .path(path_str);
        if let Some(s) = strides {
            b = b.strides(s);
        }
        b.build()
    };
    let d = match (build(a.strides.as_deref()), &a.strides) {
        (Ok(d), _) => d,
        // SPEC.md §9: an axis of length 0 or 1 never moves the pointer; numpy may give it a
        // stride that points past the buffer (`a[::2]` of a 2-element array). Stride 0 there
        // describes the same array.
        (Err(e), Some(given)) => {
            let canonical: Vec<i64> = given
                .iter()
                .zip(a.shape.iter().chain(std::iter::repeat(&2)))
                .map(|(&s, &n)| if n <= 1 { 0 } else { s })
                .collect();
            if canonical == *given {
                return Err(e.into());
            }
            build(Some(&canonical)).map_err(|_| e)?
        }
        (Err(e), None) => return Err(e.into()),
    };
    if a.compact {
        let mut buf = [0u8; stridemap_core::COMPACT_MAX_LEN];
        write_new(&a.output, d.encode_compact(&mut buf)?)
    } else {
        write_new(&a.output, &d.to_bytes())
    }
}

/// Reads and validates a descriptor file: compact if it starts with the compact magic, else
/// a fixed record.
fn read_descriptor(path: &Path) -> CliResult<ValidDescriptor> {
    // At most one byte more than the longest descriptor: enough for the decoder to refuse
    // a longer file by its length, without reading all of it.
    let mut bytes = Vec::with_capacity(DESCRIPTOR_MAX + 1);
    open_input(path)?
        .take(DESCRIPTOR_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::other(format!("{}: {e}", path.display())))?;
    let d = if bytes.starts_with(&COMPACT_MAGIC) {
        decode_compact(&bytes)
    } else {
        decode(&bytes)
    };
    d.map_err(|e| Failure::rule(format!("{}: {e}", path.display())))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn inspect(path: &Path, as_json: bool) -> CliResult {
    let d = read_descriptor(path)?;
    let (major, minor) = d.version();
    let (device, inode) = d.identity().unwrap_or((0, 0));
    let v = json!({
        "version": format!("{major}.{minor}"),
        "path": d.path(),
        "source": match d.source() { Source::Path => "path", Source::Fd => "fd" },
        "dtype": d.dtype().typestr().as_str(),
        "shape": d.shape(),
        "strides": d.strides(),
        "order": d.order().as_str(),
        "mode": d.mode().as_str(),
        "offset": d.file_offset(),
        "buffer_offset": d.buffer_offset(),
        "buffer_len": d.buffer_len(),
        "file_len": d.file_len(),
        "device": device,
        "inode": inode,
        "segment_id": d.segment_id().map(|id| hex(&id)),
        "generation": d.generation(),
        "itemsize": d.itemsize(),
        "len": d.len(),
        "nbytes": d.nbytes(),
        "span": [d.span().start, d.span().end],
        "contiguous": d.is_c_contiguous() || d.is_f_contiguous(),
        "c_contiguous": d.is_c_contiguous(),
        "f_contiguous": d.is_f_contiguous(),
    });
    if as_json {
        return out(&format!("{v}\n"));
    }
    let mut text = String::new();
    let order = [
        "version",
        "source",
        "path",
        "dtype",
        "shape",
        "strides",
        "order",
        "mode",
        "offset",
        "buffer_offset",
        "buffer_len",
        "file_len",
        "device",
        "inode",
        "segment_id",
        "generation",
        "len",
        "nbytes",
        "span",
        "c_contiguous",
        "f_contiguous",
    ];
    for k in order {
        text.push_str(&format!("{k:>14}  {}\n", v[k]));
    }
    out(&text)
}

/// What `export` writes at most unless `--max-bytes` says otherwise (and never more than the
/// spare space of the output's filesystem).
const EXPORT_CAP: u64 = 16 << 30;

/// `--max-bytes` when not given: the output filesystem's free space less the margin the
/// producers leave on a temp root (4 MiB and 1% of its size,
/// [`stridemap_shm::spare_space`]), at most [`EXPORT_CAP`].
fn default_max_bytes(output: &Path) -> (u64, String) {
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match stridemap_shm::spare_space(dir) {
        Ok(spare) if spare < EXPORT_CAP => (
            spare,
            format!(
                "the default: the free space of {} less a margin of 4 MiB and 1% of its size",
                dir.display()
            ),
        ),
        _ => (EXPORT_CAP, "the default cap, 16 GiB".into()),
    }
}

pub(crate) fn export(
    desc: &Path,
    output: &Path,
    roots: &[PathBuf],
    max_bytes: Option<u64>,
) -> CliResult {
    let d = read_descriptor(desc)?;
    // The .npy holds every logical element, packed: a broadcast view (stride 0) of a tiny
    // buffer can be terabytes. Checked before anything is opened or written.
    let (limit, why) = match max_bytes {
        Some(n) => (n, "--max-bytes".to_string()),
        None => default_max_bytes(output),
    };
    if d.nbytes() > limit {
        return Err(Failure::other(format!(
            "the view holds {} bytes of elements ({} elements of {} bytes: it repeats its \
             {}-byte buffer), more than the limit of {limit} bytes ({why}); pass \
             --max-bytes SIZE to export it anyway",
            d.nbytes(),
            d.len(),
            d.itemsize(),
            d.buffer_len()
        )));
    }
    if d.source() == Source::Fd {
        return Err(Failure::other(
            "this descriptor names a passed fd, which only the process that received it can open",
        ));
    }
    let mut opts = OpenOptions::new();
    for r in roots {
        opts = opts.allow_root(r);
    }
    let m = opts.open(&d)?;
    // Copied out a chunk at a time: the file may be rewritten by others while it is read.
    write_atomic(output, |f| {
        let mut w = std::io::BufWriter::new(f);
        npyfile::write_mapping(&m, &mut w)?;
        w.flush()
            .map_err(|e| Failure::other(format!("writing {}: {e}", output.display())))
    })
}

pub(crate) fn npy(file: &Path, output: &Path) -> CliResult {
    let d = npyfile::describe(file)?;
    write_new(output, &d.to_bytes())
}

pub(crate) fn gc(dry_run: bool, all_users: bool, roots: &[PathBuf]) -> CliResult {
    let roots = if roots.is_empty() {
        stridemap_shm::segment_bases()
    } else {
        roots.to_vec()
    };
    let opts = stridemap_shm::SweepOptions::default()
        .dry_run(dry_run)
        .all_users(all_users);
    let report = stridemap_shm::sweep_with(&roots, &opts)?;
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut text = String::new();
    for f in &report.removed {
        text.push_str(&format!("{verb} {}\n", f.display()));
    }
    for (f, why) in &report.kept {
        text.push_str(&format!("kept {} ({why})\n", f.display()));
    }
    for f in &report.owner_alive {
        text.push_str(&format!(
            "kept {} (owner alive: it holds the folder's lock)\n",
            f.display()
        ));
    }
    for f in &report.other_users {
        text.push_str(&format!(
            "skipped {} (another user's; --all-users sweeps it)\n",
            f.display()
        ));
    }
    for (f, why) in &report.failed {
        text.push_str(&format!("failed {}: {why}\n", f.display()));
    }
    text.push_str(&format!(
        "{} folder(s) {verb}, {} kept, {} live, {} other users', {} failed\n",
        report.removed.len(),
        report.kept.len(),
        report.owner_alive.len(),
        report.other_users.len(),
        report.failed.len(),
    ));
    out(&text)?;
    if report.succeeded() {
        Ok(())
    } else {
        Err(Failure::other(format!(
            "{} of the sweep's items failed (listed above); the rest {}",
            report.failed.len(),
            if dry_run {
                "would be swept"
            } else {
                "was swept"
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1T").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
