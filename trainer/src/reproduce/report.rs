//! `report.md`: the three tables beside the paper's figures, with the plots embedded.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::bench::BenchReport;
use crate::synthetic::{Summary, SyntheticArgs};
use crate::table3::{self, Row};

/// The results of the three experiments.
pub struct Results {
    pub quick: bool,
    pub table1: BenchReport,
    pub table2: BenchReport,
    pub table3: Vec<(Row, [Vec<Summary>; 2])>,
}

fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The markdown of `report.md` for the report folder `dir`.
pub fn markdown(results: &Results, dir: &Path) -> Result<String> {
    let Results {
        quick,
        table1,
        table2,
        table3,
    } = results;
    let mut md = String::new();
    writeln!(
        md,
        "# Reproduction of Martin & Cundy (2018), budget `{}`\n",
        if *quick { "quick" } else { "full" }
    )?;
    writeln!(
        md,
        "Numbers in parentheses are the paper's (NVIDIA K80 GPU); ours come from this machine \
         and this run. Speedups are ratios measured in one process.\n"
    )?;
    writeln!(md, "## Table 1: scan kernel speedup\n\n{}", table1.markdown)?;
    writeln!(md, "![Table 1]({})\n", relative(&table1.plot_png, dir))?;
    writeln!(
        md,
        "## Table 2: training throughput speedup\n\n{}",
        table2.markdown
    )?;
    if *quick {
        writeln!(
            md,
            "(Quick budget: 2 × 128 hidden and B·T = 16,384, so the paper's column is \
             left out; run `--budget full` for the paper's configuration.)\n"
        )?;
    }
    writeln!(md, "![Table 2]({})\n", relative(&table2.plot_png, dir))?;
    writeln!(md, "## Table 3: synthetic long-dependency task\n")?;
    let defaults = SyntheticArgs::default();
    writeln!(
        md,
        "Both models: Adam lr {}, clip {}, chrono gate-bias initialisation, length \
         curriculum. Converged = {} consecutive minibatches at 100 % and ≥ {:.0} % on {} \
         fresh sequences.\n",
        defaults.lr,
        defaults.clip,
        defaults.streak,
        100.0 * defaults.eval_threshold,
        defaults.eval_sequences
    )?;
    writeln!(md, "{}", table3::markdown(table3)?)?;
    for (row, runs) in table3 {
        for (model, summaries) in table3::MODELS.into_iter().zip(runs) {
            for (&seed, summary) in row.seeds.iter().zip(summaries) {
                let name = row.run_name(model, seed);
                writeln!(
                    md,
                    "### {name}\n\n{} after {} iterations, {:.1} s; evaluation {}; {:.3e} events/s\n\n![{name}]({name}/learning_curve.png)\n",
                    if summary.converged {
                        "converged".to_owned()
                    } else {
                        format!("not converged ({})", summary.stop_reason.describe())
                    },
                    summary.iterations,
                    summary.wall_seconds,
                    summary
                        .eval_accuracy
                        .map_or("not reached".to_owned(), |a| format!("{:.2} %", 100.0 * a)),
                    summary.events_per_second,
                )?;
            }
        }
    }
    Ok(md)
}
