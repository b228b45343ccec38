//! `trainer reproduce`: Ctrl-C stops it with exit code 130 and the command that continues
//! it; `--resume` keeps what an earlier session finished and continues the rest.

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

#[test]
fn ctrl_c_stops_a_reproduction_and_resume_finishes_it() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("report");
    let output = interrupt_at(&["reproduce", "--out", dir.to_str().unwrap()], "Table 1");
    let (code, stderr) = (output.code, output.stderr);
    assert_eq!(code, Some(130), "{stderr}");
    let hint = format!("trainer reproduce --resume {}", dir.display());
    assert!(stderr.contains(&hint), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(read_json(&dir.join("reproduce.json"))["budget"], "quick");
    assert!(!dir.join("report.md").exists());

    // What an earlier session finished: both tables, three runs; the fourth was
    // interrupted after its checkpoint.
    fake_table(&dir.join("kernel-bench"), "kernel_bench", "TABLE ONE KEPT");
    fake_table(&dir.join("rnn-bench"), "rnn_bench", "TABLE TWO KEPT");
    let finished = temp.path().join("finished");
    tiny_run(&finished, 400, &[]);
    for name in [
        "synthetic-gilr-lstm-n1024-seed1",
        "synthetic-gilr-lstm-n1024-seed2",
        "synthetic-lstm-n1024-seed1",
    ] {
        copy_folder(&finished, &dir.join(name));
    }
    let unfinished = dir.join("synthetic-lstm-n1024-seed2");
    tiny_run(&unfinished, 3, &["--model", "lstm"]);
    let summary = unfinished.join("summary.json");
    let text = std::fs::read_to_string(&summary).unwrap();
    std::fs::write(
        &summary,
        text.replace("\"iteration_limit\"", "\"interrupted\""),
    )
    .unwrap();

    let out = run(&["reproduce", "--resume", dir.to_str().unwrap()], &[]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("kept from the earlier session").count(),
        3
    );
    assert_eq!(
        out.stdout.matches("kept from the earlier session").count(),
        2
    );
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("TABLE ONE KEPT"), "{report}");
    assert!(report.contains("TABLE TWO KEPT"), "{report}");
    assert!(
        report.contains("### synthetic-lstm-n1024-seed2"),
        "{report}"
    );
    assert_eq!(
        read_json(&summary)["stop_reason"],
        "iteration_limit",
        "the interrupted run was not continued"
    );

    // Settings come from the folder: a flag beside --resume is an error.
    let out = run(
        &[
            "reproduce",
            "--resume",
            dir.to_str().unwrap(),
            "--budget",
            "full",
        ],
        &[],
    );
    assert_failure(&out, "cannot be used with");
    let elsewhere = temp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let out = run(&["reproduce", "--resume", elsewhere.to_str().unwrap()], &[]);
    assert_failure(&out, "reproduce.json");
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
