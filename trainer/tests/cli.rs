//! Command-line tests: they run the `trainer` binary as a user would.

mod common;

use std::path::Path;

use common::{assert_failure, jsonl_steps, read_json, run, trainer, TINY};
use serde_json::Value;

#[test]
fn help_lists_every_subcommand_and_explains_flags() {
    let out = run(&["--help"], &[]);
    assert!(out.success);
    for command in ["synthetic", "kernel-bench", "rnn-bench", "reproduce"] {
        assert!(out.stdout.contains(command), "--help lacks {command}");
    }
    let out = run(&["synthetic", "--help"], &[]);
    assert!(out.success);
    for flag in [
        "--seq-len",
        "--curriculum",
        "--resume",
        "--backend",
        "--force",
    ] {
        assert!(out.stdout.contains(flag), "synthetic --help lacks {flag}");
    }
}

#[test]
fn tiny_run_converges_and_writes_its_files() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    let out = run(TINY, &["--out", dir.to_str().unwrap()]);
    assert!(out.success, "{}", out.stderr);
    assert!(out.stdout.contains("converged"), "{}", out.stdout);
    assert!(
        out.stdout.contains(dir.to_str().unwrap()),
        "says where it wrote"
    );
    for file in [
        "summary.json",
        "metrics.csv",
        "metrics.jsonl",
        "learning_curve.png",
        "learning_curve.svg",
        "checkpoint.safetensors",
        "run.json",
    ] {
        let path = dir.join(file);
        assert!(
            path.metadata().map(|m| m.len() > 0).unwrap_or(false),
            "{file} missing or empty"
        );
    }
    let summary = read_json(&dir.join("summary.json"));
    for field in [
        "model",
        "seq_len",
        "hidden",
        "layers",
        "batch",
        "backend",
        "seed",
        "converged",
        "eval_accuracy",
        "eval_sequences",
        "iterations",
        "wall_seconds",
        "events_per_second",
        "peak_rss_bytes",
    ] {
        assert!(summary.get(field).is_some(), "summary.json lacks {field}");
    }
    assert_eq!(summary["converged"], Value::Bool(true));
    assert!(summary["eval_accuracy"].as_f64().unwrap() >= 0.99);
    assert!(summary["eval_sequences"].as_u64().unwrap() >= 256);
    let iterations = summary["iterations"].as_u64().unwrap();
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert!(csv.starts_with("step,seq_len,loss,accuracy"));
    assert_eq!(csv.lines().count() as u64, iterations + 1);
    assert_eq!(jsonl_steps(&dir), (1..=iterations).collect::<Vec<_>>());
    let svg = std::fs::read_to_string(dir.join("learning_curve.svg")).unwrap();
    assert!(svg.contains("<svg"));
}

#[test]
fn plots_are_drawn_without_a_font() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    let output = trainer()
        .env("TRAINER_FONT", "none")
        .args(TINY)
        .args(["--max-iterations", "5", "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in ["learning_curve.png", "learning_curve.svg"] {
        assert!(dir.join(file).metadata().unwrap().len() > 0, "{file}");
    }
}

#[test]
fn same_seed_gives_the_same_numbers() {
    let temp = tempfile::tempdir().unwrap();
    let losses = |name: &str| {
        let dir = temp.path().join(name);
        let out = run(
            TINY,
            &["--max-iterations", "20", "--out", dir.to_str().unwrap()],
        );
        assert!(out.success, "{}", out.stderr);
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["loss"].as_f64().unwrap(),
                    v["grad_norm"].as_f64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let (a, b) = (losses("a"), losses("b"));
    assert_eq!(a.len(), 20);
    assert_eq!(a, b);
}

#[test]
fn resume_continues_at_the_saved_step() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    let path = dir.to_str().unwrap();
    let first = run(
        TINY,
        &[
            "--max-iterations",
            "10",
            "--checkpoint-every",
            "5",
            "--out",
            path,
        ],
    );
    assert!(first.success, "{}", first.stderr);
    assert!(first.stdout.contains("--resume"), "says how to continue");
    let second = run(
        &["synthetic", "--quiet", "--resume", path],
        &["--max-iterations", "16"],
    );
    assert!(second.success, "{}", second.stderr);
    assert!(
        second.stderr.contains("resuming at step 10"),
        "{}",
        second.stderr
    );
    assert_eq!(jsonl_steps(&dir), (1..=16).collect::<Vec<_>>());
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["iterations"].as_u64(), Some(16));

    // The resumed run takes the same steps as an uninterrupted one.
    let straight = temp.path().join("straight");
    let out = run(
        TINY,
        &[
            "--max-iterations",
            "16",
            "--out",
            straight.to_str().unwrap(),
        ],
    );
    assert!(out.success, "{}", out.stderr);
    let losses = |d: &Path| -> Vec<f64> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(losses(&dir), losses(&straight));
}

#[test]
fn corrupt_or_truncated_checkpoints_are_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    let path = dir.to_str().unwrap();
    let out = run(TINY, &["--max-iterations", "3", "--out", path]);
    assert!(out.success, "{}", out.stderr);
    let checkpoint = dir.join("checkpoint.safetensors");
    let bytes = std::fs::read(&checkpoint).unwrap();

    std::fs::write(&checkpoint, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(&["synthetic", "--quiet", "--resume", path], &[]);
    assert_failure(&out, "cannot resume");

    std::fs::write(&checkpoint, b"this is not a checkpoint").unwrap();
    let out = run(&["synthetic", "--quiet", "--resume", path], &[]);
    assert_failure(&out, "checkpoint");

    // A checkpoint of another model (different hidden size) in this run's folder.
    let other = temp.path().join("other");
    let out = run(
        TINY,
        &[
            "--max-iterations",
            "3",
            "--hidden",
            "4",
            "--out",
            other.to_str().unwrap(),
        ],
    );
    assert!(out.success, "{}", out.stderr);
    std::fs::copy(other.join("checkpoint.safetensors"), &checkpoint).unwrap();
    let out = run(&["synthetic", "--quiet", "--resume", path], &[]);
    assert_failure(&out, "another run");

    std::fs::remove_file(&checkpoint).unwrap();
    let out = run(&["synthetic", "--quiet", "--resume", path], &[]);
    assert_failure(&out, "no readable checkpoint");
}

#[test]
fn bad_flags_and_impossible_configurations_fail_before_work() {
    let temp = tempfile::tempdir().unwrap();
    let runs = temp.path().to_str().unwrap();
    let with_runs = |extra: &[&str]| {
        let mut args = vec!["synthetic", "--quiet", "--runs-dir", runs];
        args.extend_from_slice(extra);
        run(&args, &[])
    };
    assert_failure(&with_runs(&["--model", "transformer"]), "invalid value");
    assert_failure(&with_runs(&["--no-such-flag"]), "unexpected argument");
    assert_failure(
        &with_runs(&["--seq-len", "0"]),
        "--seq-len must be at least 1",
    );
    assert_failure(
        &with_runs(&["--model", "sru", "--hidden", "16", "--embedding", "8"]),
        "SRU",
    );
    assert_failure(
        &with_runs(&[
            "--seq-len",
            "1000000000",
            "--batch",
            "64",
            "--hidden",
            "1024",
        ]),
        "memory is available",
    );
    assert_failure(
        &with_runs(&["--batch", "2"]),
        "meaningful convergence criterion",
    );
    assert_failure(
        &with_runs(&["--curriculum", "8,4", "-n", "16"]),
        "--curriculum",
    );
    // None of the failed runs created a run folder.
    assert_eq!(std::fs::read_dir(temp.path()).unwrap().count(), 0);

    let out = run(&["kernel-bench", "--steps", "0"], &[]);
    assert_failure(&out, "at least 1");
}

#[test]
fn cuda_without_the_feature_says_how_to_rebuild() {
    if cfg!(feature = "cuda") {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let out = run(
        TINY,
        &[
            "--backend",
            "cuda",
            "--runs-dir",
            temp.path().to_str().unwrap(),
        ],
    );
    assert_failure(&out, "--features cuda");
    let out = run(&["kernel-bench", "--backend", "cuda"], &[]);
    assert_failure(&out, "--features cuda");
}

#[test]
fn output_folders_are_never_silently_overwritten() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    let path = dir.to_str().unwrap();
    let args = ["--max-iterations", "2", "--out", path];
    assert!(run(TINY, &args).success);
    let again = run(TINY, &args);
    assert_failure(&again, "already holds files");
    let forced = run(TINY, &["--max-iterations", "2", "--force", "--out", path]);
    assert!(forced.success, "{}", forced.stderr);

    // Without --out, every run gets a new folder.
    let runs = temp.path().join("runs");
    for _ in 0..2 {
        let out = run(
            TINY,
            &[
                "--max-iterations",
                "2",
                "--runs-dir",
                runs.to_str().unwrap(),
            ],
        );
        assert!(out.success, "{}", out.stderr);
    }
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 2);
}

#[test]
fn kernel_bench_writes_its_table() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("bench");
    let out = run(
        &[
            "kernel-bench",
            "--steps",
            "16,256",
            "--features",
            "4",
            "--budget-ms",
            "5",
            "--out",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.success, "{}", out.stderr);
    assert!(out.stdout.contains("| 16 |"), "{}", out.stdout);
    assert!(out.stdout.contains("(0.06)"), "paper figures beside ours");
    for file in [
        "kernel_bench.csv",
        "kernel_bench.json",
        "kernel_bench.png",
        "kernel_bench.svg",
    ] {
        assert!(dir.join(file).exists(), "{file} missing");
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_checkpoints_and_says_how_to_resume() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    let binary = assert_cmd::cargo::cargo_bin("trainer");
    let child = std::process::Command::new(binary)
        .args(TINY)
        .args(["--streak", "1000000", "--max-iterations", "100000000"])
        .args(["--out", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the trainer starts");
    // Wait until the run has started (the Ctrl-C handler is installed before the metrics
    // files are created), then let it train a little.
    let start = std::time::Instant::now();
    while !dir.join("metrics.csv").exists() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("interrupted"), "{stdout}");
    assert!(stdout.contains("--resume"), "{stdout}");
    let summary = read_json(&dir.join("summary.json"));
    let iterations = summary["iterations"].as_u64().unwrap();
    assert!(iterations >= 1);
    // Nothing is lost: the metrics go exactly up to the checkpointed step.
    assert_eq!(jsonl_steps(&dir), (1..=iterations).collect::<Vec<_>>());
    let resumed = run(
        &["synthetic", "--quiet", "--resume", dir.to_str().unwrap()],
        &["--max-iterations", &(iterations + 3).to_string()],
    );
    assert!(resumed.success, "{}", resumed.stderr);
    assert!(resumed
        .stderr
        .contains(&format!("resuming at step {iterations}")));
}

#[test]
fn long_sequences_choose_their_settings_and_flags_override_them() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    let out = run(
        &["synthetic", "--quiet", "-n", "1048576", "--hidden", "6"],
        &["--max-iterations", "0", "--out", dir.to_str().unwrap()],
    );
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("chose --layers 1 --embedding 8 --batch 8"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("--hidden 4"), "{}", out.stdout);
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["hidden"], 6);
    assert_eq!(summary["layers"], 1);
    assert_eq!(summary["batch"], 8);
    // Short sequences keep the plain defaults and say nothing.
    let dir = temp.path().join("short");
    let out = run(
        &[
            "synthetic",
            "--quiet",
            "-n",
            "4096",
            "--max-iterations",
            "0",
        ],
        &["--out", dir.to_str().unwrap()],
    );
    assert!(out.success, "{}", out.stderr);
    assert!(!out.stdout.contains("chose"), "{}", out.stdout);
    assert_eq!(read_json(&dir.join("summary.json"))["hidden"], 32);
}

#[test]
fn the_bounded_gilr_lstm_output_trains() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    let out = run(
        TINY,
        &["--gilr-output", "tanh", "--out", dir.to_str().unwrap()],
    );
    assert!(out.success, "{}", out.stderr);
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["model"], "gilr-lstm-tanh");
    assert_eq!(summary["converged"], true);
    let out = run(TINY, &["--model", "lstm", "--gilr-output", "tanh"]);
    assert_failure(&out, "--gilr-output applies to --model gilr-lstm only");
}
