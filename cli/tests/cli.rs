//! The real `stridemap` binary: every subcommand, every exit code, describe → inspect --json →
//! export → numpy for several layouts (reversed and transposed included), garbage inputs.
//!
//! numpy comes from `$STRIDEMAP_PYTHON`, else the repository's `.venv` (which
//! `bash scripts/test.sh` creates); without either, the numpy test fails and says so.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stridemap"));
    c.env("RUST_LOG", "warn");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run stridemap")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not signalled")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Dir {
    _t: tempfile::TempDir,
    p: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().canonicalize().unwrap();
        Dir { _t: t, p }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.p.join(name)
    }
    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// 24 little-endian f64 values 0..24 after 16 bytes of padding.
fn data_file(d: &Dir) -> PathBuf {
    let p = d.path("data.bin");
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(&[0xAB; 16]).unwrap();
    for i in 0..24 {
        f.write_all(&(i as f64).to_le_bytes()).unwrap();
    }
    p
}

fn json(o: &Output) -> serde_json::Value {
    assert_eq!(code(o), 0, "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// (name, describe arguments, expected elements in C order of the view)
fn layouts() -> Vec<(&'static str, Vec<&'static str>, Vec<f64>)> {
    let c: Vec<f64> = (0..24).map(f64::from).collect();
    let reversed: Vec<f64> = (0..24).rev().map(f64::from).collect();
    let mut transposed = Vec::new();
    for j in 0..6 {
        for i in 0..4 {
            transposed.push((i * 6 + j) as f64);
        }
    }
    let step: Vec<f64> = (0..24).rev().step_by(5).map(f64::from).collect();
    vec![
        ("c", vec!["--shape", "4,6", "--offset", "16"], c),
        (
            "reversed",
            vec!["--shape", "24", "--strides=-8", "--offset", "200"],
            reversed,
        ),
        (
            "transposed",
            vec!["--shape", "6,4", "--strides", "8,48", "--offset", "16"],
            transposed,
        ),
        (
            "reversed-step",
            vec!["--shape", "5", "--strides=-40", "--offset", "200"],
            step,
        ),
        ("0-d", vec!["--shape", "--offset", "24"], vec![1.0]),
    ]
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("STRIDEMAP_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "numpy is needed: set STRIDEMAP_PYTHON or run `bash scripts/test.sh python` to make .venv"
    );
    venv
}

#[test]
fn describe_inspect_export_and_numpy_agree() {
    let d = Dir::new();
    let data = data_file(&d);
    for (name, args, want) in layouts() {
        let desc = d.s(&format!("{name}.smd"));
        let mut a = vec!["describe", data.to_str().unwrap(), "--dtype", "<f8"];
        a.extend(&args);
        a.extend(["-o", &desc]);
        let o = run(&a);
        assert_eq!(code(&o), 0, "{name}: {}", text(&o));

        let j = json(&run(&["inspect", &desc, "--json"]));
        for key in [
            "version",
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
            "segment_id",
            "nbytes",
            "contiguous",
        ] {
            assert!(j.get(key).is_some(), "{name}: no {key} in {j}");
        }
        assert_eq!(j["path"], data.to_str().unwrap());
        assert_eq!(j["dtype"], "<f8");
        assert_eq!(j["nbytes"], want.len() * 8);
        assert_eq!(j["buffer_len"], 16 + 24 * 8);

        let npy = d.s(&format!("{name}.npy"));
        let o = run(&[
            "export",
            &desc,
            "-o",
            &npy,
            "--allow-root",
            d.p.to_str().unwrap(),
        ]);
        assert_eq!(code(&o), 0, "{name}: {}", text(&o));
        // Our own reader of the .npy …
        let bytes = std::fs::read(&npy).unwrap();
        let h = stridemap::npy::Header::parse(&bytes).unwrap();
        let got: Vec<f64> = bytes[h.data_offset as usize..]
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, want, "{name}");
        // … and numpy: the export equals numpy's strided view of the same file bytes.
        let check = format!(
            "import json,numpy as np\n\
             a = np.load({npy:?})\n\
             j = json.loads({j:?})\n\
             raw = np.fromfile({data:?}, dtype=np.uint8)\n\
             buf = raw[j['buffer_offset']:j['buffer_offset'] + j['buffer_len']]\n\
             off = j['offset'] - j['buffer_offset']\n\
             el = np.ndarray(shape=j['shape'], dtype=np.dtype(j['dtype']), buffer=buf, offset=off, strides=j['strides'])\n\
             assert a.shape == tuple(j['shape']), (a.shape, j['shape'])\n\
             assert a.dtype == np.dtype('<f8') and a.flags.c_contiguous\n\
             assert np.array_equal(a, el), (a, el)\n\
             print('ok')\n",
            j = j.to_string(),
            data = data.to_str().unwrap(),
        );
        let o = Command::new(python())
            .args(["-c", &check])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "ok",
            "{name}: {}",
            text(&o)
        );
    }
}

#[test]
fn npy_describes_in_place_and_round_trips() {
    let d = Dir::new();
    let data = data_file(&d);
    let desc = d.s("t.smd");
    let transposed = [
        data.to_str().unwrap(),
        "--dtype",
        "<f8",
        "--shape",
        "6,4",
        "--strides",
        "8,48",
        "--offset",
        "16",
    ];
    let describe = |extra: &[&str]| code(&run(&[&["describe"][..], &transposed, extra].concat()));
    assert_eq!(describe(&["-o", &desc]), 0);
    let npy = d.s("t.npy");
    assert_eq!(
        code(&run(&[
            "export",
            &desc,
            "-o",
            &npy,
            "--allow-root",
            d.p.to_str().unwrap()
        ])),
        0
    );
    // The .npy's own descriptor maps its data where it lies …
    let desc2 = d.s("t2.smd");
    let o = run(&["npy", &npy, "-o", &desc2]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let j = json(&run(&["inspect", &desc2, "--json"]));
    assert_eq!(j["shape"], serde_json::json!([6, 4]));
    assert_eq!(j["contiguous"], true);
    assert_eq!(j["offset"].as_u64().unwrap() % 64, 0);
    // … and exporting that gives the same file again.
    let npy2 = d.s("t2.npy");
    assert_eq!(
        code(&run(&[
            "export",
            &desc2,
            "-o",
            &npy2,
            "--allow-root",
            d.p.to_str().unwrap()
        ])),
        0
    );
    assert_eq!(std::fs::read(&npy).unwrap(), std::fs::read(&npy2).unwrap());
    // The compact form inspects the same.
    let cdesc = d.s("t.smc");
    assert_eq!(describe(&["--compact", "-o", &cdesc]), 0);
    assert_eq!(
        json(&run(&["inspect", &cdesc, "--json"]))["strides"],
        serde_json::json!([8, 48])
    );
}

#[test]
fn exit_codes() {
    let d = Dir::new();
    let data = data_file(&d);
    let good = d.s("good.smd");
    assert_eq!(
        code(&run(&[
            "describe",
            data.to_str().unwrap(),
            "--dtype",
            "<f8",
            "--shape",
            "24",
            "--offset",
            "16",
            "-o",
            &good
        ])),
        0
    );

    // 2: bad usage.
    for args in [
        vec!["inspect"],
        vec!["frobnicate"],
        vec!["describe", "x", "--shape", "1"],
        vec!["inspect", &good, "--bogus"],
        vec!["demo", "--workers", "0"],
        vec!["demo", "--size", "1T"],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}", text(&o));
    }

    // 3: descriptors or files that break a SPEC rule or the trust policy.
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        (
            "random",
            (0..1500u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("truncated", std::fs::read(&good).unwrap()[..1000].to_vec()),
        ("bad-crc", {
            let mut b = std::fs::read(&good).unwrap();
            b[200] ^= 1;
            b
        }),
        ("compact-junk", b"\x89SMC\x01\x00\xff\xff\xff".to_vec()),
        ("text", b"{\"descr\": \"<f8\"}\n".to_vec()),
    ];
    for (name, bytes) in &garbage {
        let p = d.s(&format!("{name}.smd"));
        std::fs::write(&p, bytes).unwrap();
        let o = run(&["inspect", &p]);
        assert_eq!(code(&o), 3, "inspect {name}: {}", text(&o));
        assert!(
            text(&o).contains(": R") || text(&o).contains(": C"),
            "names the rule: {}",
            text(&o)
        );
        let o = run(&[
            "export",
            &p,
            "-o",
            &d.s(&format!("{name}.npy")),
            "--allow-root",
            d.p.to_str().unwrap(),
        ]);
        assert_eq!(code(&o), 3, "export {name}: {}", text(&o));
    }
    // A valid descriptor outside the allowed roots, and one whose file changed.
    let root = d.p.to_str().unwrap();
    let (x, y) = (d.s("x.npy"), d.s("y.npy"));
    fails(&["export", &good, "-o", &x], 3, "O2");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&data)
        .unwrap();
    f.write_all(b"more").unwrap();
    fails(&["export", &good, "-o", &y, "--allow-root", root], 3, "O7");
    // describe of a view that does not fit the file, and of an unknown dtype.
    let file = data.to_str().unwrap();
    let (big, q) = (d.s("big.smd"), d.s("q.smd"));
    fails(
        &[
            "describe", file, "--dtype", "<f8", "--shape", "30", "-o", &big,
        ],
        3,
        "R22",
    );
    fails(
        &["describe", file, "--dtype", "<q8", "--shape", "1", "-o", &q],
        3,
        "R8",
    );
    // A broken .npy.
    std::fs::write(
        d.path("bad.npy"),
        b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8'",
    )
    .unwrap();
    fails(
        &["npy", &d.s("bad.npy"), "-o", &d.s("bad.smd2")],
        3,
        "truncated",
    );

    // 1: other failures (a missing file; a FIFO or device given as input).
    fails(&["inspect", &d.s("missing.smd")], 1, "missing.smd");
    fails(&["inspect", "/dev/zero"], 1, "not a regular file");
    // An output that exists is replaced (atomically).
    let before = std::fs::read(&good).unwrap();
    let o = run(&[
        "describe", file, "--dtype", "<f8", "--shape", "3", "-o", &good,
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_ne!(std::fs::read(&good).unwrap(), before, "replaced");
}

/// Runs `args`, which must exit with `want` and say `needle`.
fn fails(args: &[&str], want: i32, needle: &str) {
    let o = run(args);
    assert_eq!(code(&o), want, "{args:?}: {}", text(&o));
    assert!(
        text(&o).contains(needle),
        "{args:?} should say {needle:?}: {}",
        text(&o)
    );
}

#[test]
fn gc_lists_and_removes_only_dead_owners_folders() {
    let d = Dir::new();
    // A folder named like a pool of a process that cannot exist (pid 4194304 > pid_max) …
    let dead = d.path("stridemap-4194304-1-0123456789abcdef0123456789abcdef");
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("seg-x"), b"x").unwrap();
    // … a live one (this process's pid and start time are real) and something else.
    let pool = stridemap_shm::Pool::with_config(
        stridemap_shm::PoolConfig::default()
            .temp_folder(&d.p)
            .sweep_on_start(false),
    )
    .unwrap();
    let _held = pool.alloc::<u8>(&[10], stridemap_core::Order::C).unwrap();
    std::fs::create_dir(d.path("unrelated")).unwrap();

    let o = run(&["gc", "--dry-run", "--root", d.p.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        text(&o).contains(&format!("would remove {}", dead.display())),
        "{}",
        text(&o)
    );
    assert!(dead.exists());
    let o = run(&["gc", "--root", d.p.to_str().unwrap()]);
    assert_eq!(code(&o), 0);
    assert!(text(&o).contains("removed"), "{}", text(&o));
    assert!(!dead.exists());
    assert!(pool.folders()[0].exists() && d.path("unrelated").exists());
}

#[test]
fn the_demo_runs_and_checks_every_answer() {
    for kind in ["memfd", "file"] {
        let o = run(&["demo", "--size", "16M", "--workers", "2", "--kind", kind]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        let t = text(&o);
        assert!(t.contains("answers verified             6/6"), "{t}");
        assert!(t.contains("handoff latency"), "{t}");
        // Where a named segment's bytes go is said before they are written.
        assert_eq!(
            t.contains("the named segment goes to "),
            kind == "file",
            "{t}"
        );
        assert!(
            t.contains("huge pages                   yes: ")
                || t.contains("huge pages                   no (4 KiB pages): "),
            "{t}"
        );
    }
}

#[test]
fn the_bench_report_runs() {
    let o = bin()
        .args(["bench", "--quick", "--json"])
        .env("STRIDEMAP_PYTHON", python())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    for group in [
        "decode",
        "open",
        "views",
        "handoff",
        "share",
        "huge pages",
        "end to end",
        "joblib",
    ] {
        assert!(rows.iter().any(|r| r["group"] == group), "no {group} rows");
    }
}
