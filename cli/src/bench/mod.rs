//! `stridemap bench`: the benchmark report — every figure a ratio measured in one run against
//! the alternative on the same machine, with the target it is held to.

mod breakdown;
mod decode;
mod huge;
mod joblib;
mod shm;
mod timing;
mod views;

use std::path::{Path, PathBuf};

pub(crate) use timing::{fmt_rate, fmt_secs, paired, per_call};

/// How long and how often to measure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub(crate) rounds: usize,
    pub(crate) batch: std::time::Duration,
    pub(crate) quick: bool,
}

impl Budget {
    pub(crate) fn new(quick: bool) -> Budget {
        if quick {
            Budget {
                rounds: 5,
                batch: std::time::Duration::from_millis(20),
                quick,
            }
        } else {
            Budget {
                rounds: 15,
                batch: std::time::Duration::from_millis(60),
                quick,
            }
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) group: &'static str,
    pub(crate) name: String,
    pub(crate) ours: String,
    pub(crate) reference: String,
    /// ours / reference (or reference / ours, as `target` says).
    pub(crate) ratio: Option<f64>,
    pub(crate) target: String,
    pub(crate) met: Option<bool>,
}

impl Row {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "group": self.group, "name": self.name, "ours": self.ours,
            "reference": self.reference, "ratio": self.ratio, "target": self.target, "met": self.met,
        })
    }
}

/// A scratch folder on tmpfs (or the temp dir) for benchmark files, removed on drop.
pub(crate) struct Scratch {
    pub(crate) dir: PathBuf,
}

impl Scratch {
    pub(crate) fn new() -> std::io::Result<Scratch> {
        let base = ["/dev/shm".into(), std::env::temp_dir()]
            .into_iter()
            .find(|b: &PathBuf| b.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("stridemap-bench-{}", std::process::id()));
        // Private (0700), and new: a stridemap-* folder is a default root only when it is
        // this user's and private (SPEC.md §6).
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)?;
        Ok(Scratch {
            dir: dir.canonicalize()?,
        })
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `stridemap bench`.
pub(crate) fn command(quick: bool, json: bool, only: &[String]) -> crate::CliResult {
    let rows = run(Budget::new(quick), only, &|stage| {
        eprintln!("measuring {stage} …")
    })
    .map_err(crate::Failure::other)?;
    if json {
        let all: Vec<_> = rows.iter().map(Row::json).collect();
        crate::files::out(&format!("{}\n", serde_json::Value::Array(all)))
    } else {
        print_table(&rows);
        Ok(())
    }
}

/// The groups of the report, in order.
const GROUPS: [&str; 8] = [
    "decode",
    "open",
    "views",
    "handoff",
    "share",
    "huge-pages",
    "end-to-end",
    "joblib",
];

/// A group's name as the report prints it ("end to end"), and as `--only` matches it
/// ("end-to-end" and "end_to_end" name it too).
fn printed(g: &str) -> String {
    g.trim().to_ascii_lowercase().replace(['-', '_'], " ")
}

/// The groups `only` names (all when empty), in report order.
fn select(only: &[String]) -> Result<Vec<&'static str>, String> {
    let only: Vec<String> = only.iter().map(|g| printed(g)).collect();
    if let Some(bad) = only
        .iter()
        .find(|g| !GROUPS.iter().any(|k| printed(k) == **g))
    {
        let names: Vec<String> = GROUPS.iter().map(|g| printed(g)).collect();
        return Err(format!(
            "no benchmark group {bad:?} (groups: {})",
            names.join(", ")
        ));
    }
    Ok(GROUPS
        .into_iter()
        .filter(|g| only.is_empty() || only.contains(&printed(g)))
        .collect())
}

/// Runs the benchmark groups (all, or those in `only`) and returns the rows.
pub(crate) fn run(
    budget: Budget,
    only: &[String],
    progress: &dyn Fn(&str),
) -> anyhow_free::Result<Vec<Row>> {
    let groups = select(only)?;
    let scratch = Scratch::new().map_err(|e| format!("scratch folder: {e}"))?;
    let mut rows = Vec::new();
    for group in groups {
        progress(group);
        rows.extend(match group {
            "decode" => decode::rows(budget)?,
            "open" => views::open_rows(budget, &scratch)?,
            "views" => views::sum_rows(budget, &scratch)?,
            "handoff" => shm::handoff_rows(budget, &scratch)?,
            "share" => shm::share_rows(budget, &scratch)?,
            "huge-pages" => huge::rows(budget, &scratch)?,
            "end-to-end" => shm::end_to_end_rows(budget, &scratch)?,
            _ => joblib::rows(budget, &scratch)?,
        });
    }
    Ok(rows)
}

/// Prints the rows as an aligned table.
pub(crate) fn print_table(rows: &[Row]) {
    let w = |f: &dyn Fn(&Row) -> usize, min: usize| rows.iter().map(f).max().unwrap_or(0).max(min);
    let (wn, wo, wr, wt) = (
        w(&|r| r.group.len() + r.name.len() + 2, 9),
        w(&|r| r.ours.len(), 4),
        w(&|r| r.reference.len(), 9),
        w(&|r| r.target.len(), 6),
    );
    println!(
        "{:<wn$}  {:>wo$}  {:>wr$}  {:>8}  {:<wt$}  met",
        "benchmark", "ours", "reference", "ratio", "target"
    );
    for r in rows {
        let ratio = r.ratio.map_or("-".to_string(), |x| format!("{x:.3}"));
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!(
            "{:<wn$}  {:>wo$}  {:>wr$}  {:>8}  {:<wt$}  {}",
            format!("{}: {}", r.group, r.name),
            r.ours,
            r.reference,
            ratio,
            r.target,
            met
        );
    }
}

/// Errors in the benchmark code are just messages.
pub(crate) mod anyhow_free {
    /// A benchmark result.
    pub(crate) type Result<T> = std::result::Result<T, String>;
}

#[cfg(test)]
mod tests {
    use super::select;

    #[test]
    fn only_takes_the_printed_group_names() {
        let s = |v: &[&str]| select(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&["end to end"]), Ok(vec!["end-to-end"]));
        assert_eq!(
            s(&["end-to-end", "decode"]),
            Ok(vec!["decode", "end-to-end"])
        );
        assert_eq!(s(&[]).unwrap().len(), 8);
        assert_eq!(s(&["huge pages"]), Ok(vec!["huge-pages"]));
        let e = s(&["nonsense"]).unwrap_err();
        assert!(e.contains("end to end"), "{e}");
    }
}
