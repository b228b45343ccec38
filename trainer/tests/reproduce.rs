//! `trainer reproduce`: Ctrl-C stops it with exit code 130 and the command that continues
//! it; `--resume` keeps what an earlier session finished (and only what belongs to this
//! reproduction) and continues the rest.

mod common;

use std::path::Path;

use common::{assert_failure, interrupt_at, read_json, run, tiny_run};

/// Writes every file of a finished table `stem` into `dir`, its markdown `marker`.
fn fake_table(dir: &Path, stem: &str, marker: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for extension in ["csv", "json", "md", "png", "svg"] {
        std::fs::write(dir.join(format!("{stem}.{extension}")), marker).unwrap();
    }
}

/// A run with the settings of the quick budget's Table 3 run `model`, `seed`, stopped
/// after two iterations, in `dir`.
fn planned_run(dir: &Path, model: &str, seed: &str) {
    let mut args = vec![
        "synthetic",
        "--quiet",
        "-n",
        "1024",
        "--model",
        model,
        "--seed",
        seed,
        "--max-iterations",
        "2",
        "--out",
        dir.to_str().unwrap(),
    ];
    if model == "lstm" {
        args.extend(["--max-seconds", "180"]);
    }
    let out = run(&args, &[]);
    assert!(out.success, "{}", out.stderr);
}

const RUNS: [(&str, &str, &str); 4] = [
    ("synthetic-gilr-lstm-n1024-seed1", "gilr-lstm", "1"),
    ("synthetic-gilr-lstm-n1024-seed2", "gilr-lstm", "2"),
    ("synthetic-lstm-n1024-seed1", "lstm", "1"),
    ("synthetic-lstm-n1024-seed2", "lstm", "2"),
];

#[test]
fn ctrl_c_stops_a_reproduction_and_resume_finishes_it() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("report");
    // An older reproduction's results in the folder: a new one with --force removes them.
    fake_table(&dir.join("rnn-bench"), "rnn_bench", "STALE");
    let stale_run = dir.join(RUNS[0].0);
    tiny_run(&stale_run, 3, &[]);
    let path = dir.to_str().unwrap();
    let output = interrupt_at(&["reproduce", "--out", path, "--force"], "Table 1");
    let (code, stderr) = (output.code, output.stderr);
    assert_eq!(code, Some(130), "{stderr}");
    let hint = format!("trainer reproduce --resume {}", dir.display());
    assert!(stderr.contains(&hint), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(read_json(&dir.join("reproduce.json"))["budget"], "quick");
    assert!(!dir.join("report.md").exists());
    assert!(
        !dir.join("rnn-bench/rnn_bench.md").exists(),
        "a stale table stayed"
    );
    assert!(
        !stale_run.join("checkpoint.safetensors").exists(),
        "a stale run stayed"
    );

    // What an earlier session finished: both tables, three runs; the fourth was
    // interrupted after its checkpoint.
    fake_table(&dir.join("kernel-bench"), "kernel_bench", "TABLE ONE KEPT");
    fake_table(&dir.join("rnn-bench"), "rnn_bench", "TABLE TWO KEPT");
    for (name, model, seed) in RUNS {
        planned_run(&dir.join(name), model, seed);
    }
    let summary = dir.join(RUNS[3].0).join("summary.json");
    let text = std::fs::read_to_string(&summary).unwrap();
    std::fs::write(
        &summary,
        text.replace("\"iteration_limit\"", "\"interrupted\""),
    )
    .unwrap();

    let out = run(&["reproduce", "--resume", path], &[]);
    assert!(out.success, "{}", out.stderr);
    let kept = "kept from the earlier session";
    assert_eq!(out.stderr.matches(kept).count(), 3, "{}", out.stderr);
    assert_eq!(out.stdout.matches(kept).count(), 2, "{}", out.stdout);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("TABLE ONE KEPT"), "{report}");
    assert!(report.contains("TABLE TWO KEPT"), "{report}");
    for (name, _, _) in RUNS {
        assert!(report.contains(&format!("### {name}")), "{report}");
    }
    assert_eq!(
        read_json(&summary)["stop_reason"],
        "iteration_limit",
        "the interrupted run was not continued"
    );

    // A run of other settings in a run's folder is refused, naming the folder.
    let other = dir.join(RUNS[1].0);
    std::fs::remove_dir_all(&other).unwrap();
    tiny_run(&other, 3, &[]);
    let out = run(&["reproduce", "--resume", path], &[]);
    assert_failure(&out, "holds a run with other settings");
    assert!(out.stderr.contains(RUNS[1].0), "{}", out.stderr);

    // Settings come from the folder: a flag beside --resume is an error.
    let out = run(&["reproduce", "--resume", path, "--budget", "full"], &[]);
    assert_failure(&out, "cannot be used with");
    let elsewhere = temp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let out = run(&["reproduce", "--resume", elsewhere.to_str().unwrap()], &[]);
    assert_failure(&out, "reproduce.json");
}
