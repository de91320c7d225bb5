//! The descriptor tools: describe, inspect, export, npy, gc.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use stridemap::{OpenOptions, npy as npyfile};
use stridemap_core::{
    Builder, COMPACT_MAGIC, DType, Mode, Order, Source, ValidDescriptor, decode, decode_compact,
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
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    shape: Vec<u64>,
    /// Strides in bytes, comma-separated (any sign); default: contiguous in --order.
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        conflicts_with = "order"
    )]
    strides: Option<Vec<i64>>,
    /// Memory order used when no strides are given.
    #[arg(long, value_parser = ["C", "F"])]
    order: Option<String>,
    /// Byte offset of element (0, …, 0) from the start of the file.
    #[arg(long, default_value_t = 0)]
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

fn write_new(path: &Path, bytes: &[u8]) -> CliResult {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Failure::other(format!("creating {}: {e}", path.display())))?;
    f.write_all(bytes)
        .map_err(|e| Failure::other(format!("writing {}: {e}", path.display())))
}

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
    let mut b = Builder::new(dtype, &a.shape)
        .order(order)
        .offset(offset)
        .buffer(buffer_offset, buffer_len)
        .file_len(meta.len())
        .identity(meta.dev(), meta.ino())
        .mode(mode)
        .path(path_str);
    if let Some(s) = &a.strides {
        b = b.strides(s);
    }
    let d = b.build()?;
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
    let bytes =
        std::fs::read(path).map_err(|e| Failure::other(format!("{}: {e}", path.display())))?;
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

pub(crate) fn export(desc: &Path, output: &Path, roots: &[PathBuf]) -> CliResult {
    let d = read_descriptor(desc)?;
    if d.source() == Source::Fd {
        return Err(Failure::other(
            "this descriptor names a passed fd, which only the process that received it can open",
        ));
    }
    let mut opts = OpenOptions::new();
    for r in roots {
        opts = opts.allow_root(r);
    }
    let m = stridemap::open(&d, &opts)?;
    // A private copy: the file may be rewritten by others while it is read.
    let array = m.copy_array()?;
    npyfile::write_file(&array.byte_view()?, output)?;
    Ok(())
}

pub(crate) fn npy(file: &Path, output: &Path) -> CliResult {
    let d = npyfile::describe(file)?;
    write_new(output, &d.to_bytes())
}

pub(crate) fn gc(dry_run: bool, roots: &[PathBuf]) -> CliResult {
    let roots = if roots.is_empty() {
        stridemap_shm::segment_bases()
    } else {
        roots.to_vec()
    };
    let report = stridemap_shm::sweep(&roots, dry_run)?;
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut text = String::new();
    for f in &report.removed {
        text.push_str(&format!("{verb} {}\n", f.display()));
    }
    for f in &report.in_use {
        text.push_str(&format!(
            "kept {} (owner dead, files still mapped)\n",
            f.display()
        ));
    }
    for f in &report.owner_alive {
        text.push_str(&format!("kept {} (owner alive)\n", f.display()));
    }
    text.push_str(&format!(
        "{} folder(s) {verb}, {} in use, {} live\n",
        report.removed.len(),
        report.in_use.len(),
        report.owner_alive.len()
    ));
    out(&text)
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
