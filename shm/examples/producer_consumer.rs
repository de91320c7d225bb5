use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;

use stridemap_shm::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A worker (this program run again): sums rows k*500..(k+1)*500 into its part of the output.
    let mut args = std::env::args().skip(1);
    if let (Some(path), Some(k)) = (args.next(), args.next()) {
        let k: usize = k.parse()?;
        let rows = Slice::between(k * 500, (k + 1) * 500);
        let stream = UnixStream::connect(path)?;
        let input = OpenOptions::new().open(socket::recv(&stream)?)?; // checked, mapped
        let writable = OpenOptions::new().mode(Mode::ReadWrite);
        let mut output = writable.open(socket::recv(&stream)?)?; // r+: written in place
        // The input is a frozen memfd (sealed by the kernel, checked on our fd): its views lend
        // &f64s. Both workers write the output: its views copy each element in (volatile).
        let mine = input.view::<f64>()?.slice_axis(0, rows)?;
        let mut sums = output.volatile_view_mut::<f64>()?.slice_axis(0, rows)?;
        for (i, row) in mine.axis_iter(0)?.enumerate() {
            sums.set(&[i], row.iter().sum())?;
        }
        return Ok(());
    }
    // Producer: a 1000x3 array in a memfd, filled in place and frozen; an output for the sums.
    // Until it is frozen, another process could map it writable, so the fill lends no &mut:
    // it writes through copies (volatile, or copy_from_slice: one memcpy).
    let pool = Pool::with_config(PoolConfig::default().kind(SegmentKind::Memfd))?;
    let mut a = pool.alloc::<f64>(&[1000, 3], Order::C)?;
    let mut values = (0..).map(f64::from);
    a.volatile_view_mut()?
        .fill_with(|| values.next().unwrap_or_default());
    let a = a.freeze()?; // sealed F_SEAL_WRITE: from now on its views lend &f64s
    let sums = pool.alloc_output::<f64>(&[1000], Order::C)?;
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("s");
    let listener = UnixListener::bind(&sock)?;
    let mut workers = Vec::new();
    for k in ["0", "1"] {
        workers.push(
            Command::new(std::env::current_exe()?)
                .arg(&sock)
                .arg(k)
                .spawn()?,
        );
        let (stream, _) = listener.accept()?;
        a.send(&stream)?; // 1 KiB descriptor + fd, whatever the array's size
        sums.send(&stream)?; // r+, with a writable fd
    }
    for mut w in workers {
        if !w.wait()?.success() {
            return Err("a worker failed".into());
        }
    }
    let sums = sums.to_vec()?;
    println!("row sums: {:?}", (sums.first(), sums.last()));
    Ok(())
}
