//! `--resume` under faults and damage: nothing lost, nothing silently changed.
//!
//! `TRAINER_FAULT=<point>:<n>` makes the binary abort (like SIGKILL: no destructor runs,
//! nothing buffered is written) the n-th time it passes a named point, which reproduces a
//! kill in a precise window.

mod common;

use std::path::Path;

use common::{
    assert_failure, interrupt_at, jsonl_steps, read_json, resume, run_with_env, snapshot, tiny_run,
    TINY,
};
use serde_json::Value;
use surrogate_rnn::{load_checkpoint, save_checkpoint, Classifier, Parameters};

/// Runs TINY with a fault point armed; the process must die at it.
fn run_killed_at(point: &str, args: &[&str], extra: &[&str]) {
    let out = run_with_env(args, extra, &[("TRAINER_FAULT", point)]);
    assert!(
        !out.success && out.code != Some(1),
        "the fault point `{point}` was not reached:\n{}",
        out.stderr
    );
}

fn checkpoint_step(dir: &Path) -> u64 {
    let (_, adam, _) = load_checkpoint::<f32>(&dir.join("checkpoint.safetensors")).unwrap();
    adam.steps()
}

fn params(model: &Classifier<f32>) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    model.visit_params(&mut |_, value, _| out.push(value.iter().map(|v| v.to_bits()).collect()));
    out
}

/// The CSV columns that come from the computation (step … grad_norm, clipped), per row.
fn csv_loss_columns(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').take(6).collect::<Vec<_>>().join(","))
        .collect()
}

/// The raw text of the `loss`, `accuracy` and `grad_norm` fields of every JSON line.
fn jsonl_loss_text(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            ["\"loss\":", "\"accuracy\":", "\"grad_norm\":"]
                .iter()
                .map(|key| {
                    let start = line.find(key).unwrap() + key.len();
                    let end = start + line[start..].find(',').unwrap();
                    line[start..end].to_owned()
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn a_kill_between_checkpoint_and_metrics_leaves_no_gap() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    let path = dir.to_str().unwrap();
    run_killed_at(
        "checkpoint-saved:3",
        TINY,
        &["--checkpoint-every", "1", "--streak", "1000", "--out", path],
    );
    let step = checkpoint_step(&dir);
    assert!(step >= 1);
    let steps = jsonl_steps(&dir);
    assert!(
        steps.len() as u64 >= step && steps[..step as usize] == (1..=step).collect::<Vec<_>>()[..],
        "the checkpoint is at step {step} but the metrics hold steps {steps:?}"
    );
    let out = resume(&dir, &["--max-iterations", "6"]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(jsonl_steps(&dir), (1..=6).collect::<Vec<_>>());
}

#[test]
fn a_kill_while_resume_rewrites_the_metrics_loses_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    tiny_run(&dir, 8, &["--streak", "1000"]);
    let before = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let csv_before = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    // Keep a second name of the old file: a rewrite in place would change it too.
    std::fs::hard_link(dir.join("metrics.jsonl"), temp.path().join("old.jsonl")).unwrap();
    run_killed_at(
        "metrics-rewrite:1",
        &["synthetic", "--quiet", "--resume", dir.to_str().unwrap()],
        &["--max-iterations", "12"],
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap(),
        before
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("metrics.csv")).unwrap(),
        csv_before
    );
    let out = resume(&dir, &["--max-iterations", "12"]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(jsonl_steps(&dir), (1..=12).collect::<Vec<_>>());
    assert_eq!(
        std::fs::read_to_string(temp.path().join("old.jsonl")).unwrap(),
        before,
        "the metrics were rewritten in place"
    );
}

#[test]
fn resuming_a_finished_run_refuses_and_changes_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    let out = tiny_run(&dir, 400, &[]);
    assert!(out.stdout.contains("converged"), "{}", out.stdout);
    let before = snapshot(&dir);
    let out = resume(&dir, &[]);
    assert_failure(&out, "already converged");
    assert_eq!(snapshot(&dir), before);
    let iterations = read_json(&dir.join("summary.json"))["iterations"]
        .as_u64()
        .unwrap();
    let out = resume(&dir, &["--max-iterations", &iterations.to_string()]);
    assert_failure(&out, "already converged");
    assert_eq!(snapshot(&dir), before);

    // A run stopped at its iteration limit resumes only with a higher limit.
    let limited = temp.path().join("limited");
    tiny_run(&limited, 5, &["--streak", "1000"]);
    let before = snapshot(&limited);
    for extra in [
        &[][..],
        &["--max-iterations", "5"],
        &["--max-iterations", "3"],
    ] {
        let out = resume(&limited, extra);
        assert_failure(&out, "--max-iterations");
        assert_eq!(snapshot(&limited), before);
    }
    let out = resume(&limited, &["--max-iterations", "7"]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(jsonl_steps(&limited), (1..=7).collect::<Vec<_>>());
}

/// Makes the second line of a run's metrics.jsonl garbage; returns the file's path.
fn damage_second_jsonl_line(dir: &Path) -> std::path::PathBuf {
    let jsonl = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1] = "{\"step\": garbage";
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    jsonl
}

#[test]
fn damaged_history_is_restored_from_the_csv_with_a_warning() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    tiny_run(&dir, 8, &["--streak", "1000"]);
    let losses = jsonl_loss_text(&dir);
    let jsonl = damage_second_jsonl_line(&dir);
    let out = resume(&dir, &["--max-iterations", "10"]);
    assert!(out.success, "{}", out.stderr);
    for part in ["warning", "line 2 of", "steps 2–8", "metrics.csv"] {
        assert!(out.stderr.contains(part), "{part}: {}", out.stderr);
    }
    assert_eq!(jsonl_steps(&dir), (1..=10).collect::<Vec<_>>());
    assert_eq!(jsonl_loss_text(&dir)[..8], losses[..]);

    std::fs::remove_file(&jsonl).unwrap();
    let out = resume(&dir, &["--max-iterations", "12"]);
    assert!(out.success, "{}", out.stderr);
    assert!(out.stderr.contains("steps 1–10"), "{}", out.stderr);
    assert_eq!(jsonl_steps(&dir), (1..=12).collect::<Vec<_>>());
}

#[test]
fn history_lost_from_both_files_is_refused_with_the_steps() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    tiny_run(&dir, 8, &["--streak", "1000"]);
    let jsonl = damage_second_jsonl_line(&dir);
    let csv = dir.join("metrics.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(&csv, text.replace("\n5,", "\nfive,")).unwrap();
    let before = snapshot(&dir);
    let out = resume(&dir, &["--max-iterations", "10"]);
    assert_failure(&out, "line 2 of");
    assert!(out.stderr.contains("steps 2–8"), "{}", out.stderr);
    assert_eq!(snapshot(&dir), before);

    std::fs::remove_file(&jsonl).unwrap();
    std::fs::remove_file(&csv).unwrap();
    let before = snapshot(&dir);
    let out = resume(&dir, &["--max-iterations", "10"]);
    assert_failure(&out, "metrics.jsonl` is missing");
    assert!(out.stderr.contains("steps 1–8"), "{}", out.stderr);
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn a_partial_last_line_after_the_checkpoint_is_dropped() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    tiny_run(&dir, 6, &["--streak", "1000"]);
    let jsonl = dir.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&jsonl).unwrap();
    text.push_str("{\"step\":7,\"seq_len\":24,\"lo");
    std::fs::write(&jsonl, text).unwrap();
    let out = resume(&dir, &["--max-iterations", "8"]);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(jsonl_steps(&dir), (1..=8).collect::<Vec<_>>());
}

#[test]
fn checkpoints_are_checked_against_their_run() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    tiny_run(&dir, 4, &["--streak", "1000"]);
    let checkpoint = dir.join("checkpoint.safetensors");
    let good = std::fs::read(&checkpoint).unwrap();

    // One flipped bit in the last tensor byte.
    let mut bytes = good.clone();
    *bytes.last_mut().unwrap() ^= 0x40;
    std::fs::write(&checkpoint, &bytes).unwrap();
    assert_failure(&resume(&dir, &["--max-iterations", "6"]), "checksum");

    // An edited step in the metadata (same length, so the file still parses).
    let header = String::from_utf8_lossy(&good[..2000.min(good.len())]).into_owned();
    assert!(header.contains("\"step\":\"4\""), "{header}");
    let at = good
        .windows(10)
        .position(|w| w == b"\"step\":\"4\"")
        .unwrap();
    let mut bytes = good.clone();
    bytes[at + 8] = b'3';
    std::fs::write(&checkpoint, &bytes).unwrap();
    assert_failure(&resume(&dir, &["--max-iterations", "6"]), "checksum");

    // A well-formed checkpoint whose trainer state is out of range.
    let (model, adam, meta) = load_checkpoint::<f32>(&dir.join("checkpoint.safetensors"))
        .or_else(|_| {
            std::fs::write(&checkpoint, &good).unwrap();
            load_checkpoint::<f32>(&checkpoint)
        })
        .unwrap();
    let mut extra = meta.extra.clone();
    let mut state: Value = serde_json::from_str(&extra["loop_state"]).unwrap();
    state["stage"] = Value::from(9);
    extra.insert("loop_state".into(), state.to_string());
    save_checkpoint(&checkpoint, &model, &adam, meta.seed, &extra).unwrap();
    assert_failure(&resume(&dir, &["--max-iterations", "6"]), "stage");

    let mut state: Value = serde_json::from_str(&meta.extra["loop_state"]).unwrap();
    state["stages"][0]["iterations"] = Value::from(2);
    let mut extra = meta.extra.clone();
    extra.insert("loop_state".into(), state.to_string());
    save_checkpoint(&checkpoint, &model, &adam, meta.seed, &extra).unwrap();
    assert_failure(&resume(&dir, &["--max-iterations", "6"]), "step");

    // run.json edited to another sequence length.
    std::fs::write(&checkpoint, &good).unwrap();
    let settings = dir.join("run.json");
    let original = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        original.replace("\"seq_len\": 24", "\"seq_len\": 32"),
    )
    .unwrap();
    assert_failure(&resume(&dir, &["--max-iterations", "6"]), "run.json");
    std::fs::write(&settings, &original).unwrap();

    // A checkpoint of another run with the same settings.
    let other = temp.path().join("other");
    tiny_run(&other, 4, &["--streak", "1000"]);
    std::fs::copy(other.join("checkpoint.safetensors"), &checkpoint).unwrap();
    assert_failure(&resume(&dir, &["--max-iterations", "6"]), "another run");

    // The good checkpoint still resumes.
    std::fs::write(&checkpoint, &good).unwrap();
    let out = resume(&dir, &["--max-iterations", "6"]);
    assert!(out.success, "{}", out.stderr);
}

#[test]
fn resume_refuses_the_flags_it_does_not_accept() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    tiny_run(&dir, 3, &["--streak", "1000"]);
    let before = snapshot(&dir);
    let elsewhere = temp.path().join("elsewhere");
    for (flag, value) in [
        ("--hidden", Some("4")),
        ("--lr", Some("0.5")),
        ("--seed", Some("9")),
        ("-n", Some("48")),
        ("--out", Some(elsewhere.to_str().unwrap())),
        ("--force", None),
    ] {
        let mut extra = vec!["--max-iterations", "5", flag];
        extra.extend(value);
        let out = resume(&dir, &extra);
        assert_failure(&out, "cannot be used with");
        let named = if flag == "-n" { "--seq-len" } else { flag };
        assert!(out.stderr.contains(named), "{flag}: {}", out.stderr);
        assert_eq!(snapshot(&dir), before, "{flag}");
    }
}

#[test]
fn resumed_metrics_match_an_uninterrupted_run_byte_for_byte() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    tiny_run(&dir, 10, &["--streak", "1000", "--checkpoint-every", "5"]);
    let out = resume(&dir, &["--max-iterations", "20"]);
    assert!(out.success, "{}", out.stderr);
    let straight = temp.path().join("straight");
    tiny_run(&straight, 20, &["--streak", "1000"]);
    assert_eq!(csv_loss_columns(&dir), csv_loss_columns(&straight));
    assert_eq!(jsonl_loss_text(&dir), jsonl_loss_text(&straight));
    let (a, _, _) = load_checkpoint::<f32>(&dir.join("checkpoint.safetensors")).unwrap();
    let (b, _, _) = load_checkpoint::<f32>(&straight.join("checkpoint.safetensors")).unwrap();
    assert_eq!(params(&a), params(&b));
}

#[test]
fn stale_checkpoint_temporaries_are_removed_on_start() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    tiny_run(&dir, 3, &["--streak", "1000"]);
    let stale = dir.join("checkpoint.safetensors.tmp-999999999");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let out = resume(&dir, &["--max-iterations", "4"]);
    assert!(out.success, "{}", out.stderr);
    assert!(!stale.exists(), "the stale temporary is still there");
}

#[cfg(unix)]
#[test]
fn ctrl_c_during_the_evaluation_checkpoints_and_exits_130() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    let extra = ["--eval-sequences", "30000", "--out", dir.to_str().unwrap()];
    let output = interrupt_at(&[TINY, &extra].concat(), "evaluating");
    assert_eq!(output.code, Some(130), "{}", output.stdout);
    assert!(output.stdout.contains("interrupted"), "{}", output.stdout);
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["converged"], Value::Bool(false));
    let iterations = summary["iterations"].as_u64().unwrap();
    assert_eq!(jsonl_steps(&dir), (1..=iterations).collect::<Vec<_>>());
    assert_eq!(checkpoint_step(&dir), iterations);

    // The resumed run evaluates again and ends as an uninterrupted one.
    let out = resume(&dir, &[]);
    assert!(out.success, "{}", out.stderr);
    let straight = temp.path().join("straight");
    tiny_run(&straight, 400, &["--eval-sequences", "30000"]);
    let summary = |d: &Path| {
        let s = read_json(&d.join("summary.json"));
        (
            s["iterations"].clone(),
            s["eval_accuracy"].clone(),
            s["converged"].clone(),
        )
    };
    assert_eq!(summary(&dir), summary(&straight));
    assert_eq!(csv_loss_columns(&dir), csv_loss_columns(&straight));
}

#[test]
fn the_time_limit_stops_a_long_evaluation_which_runs_again_on_resume() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("run");
    // Two billion sequences would take hours: the limit must stop the evaluation, and its
    // progress must be reported while it runs (a status line every 10 s with --quiet, so
    // the evaluation must start within 8 s).
    let started = std::time::Instant::now();
    let out = run_with_env(
        TINY,
        &[
            "--eval-sequences",
            "2000000000",
            "--max-seconds",
            "18",
            "--out",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.success, "{}", out.stderr);
    assert!(
        started.elapsed().as_secs() < 120,
        "the evaluation ran past the limit"
    );
    assert!(
        out.stderr.contains("evaluation stopped (time limit)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("evaluating: "), "{}", out.stderr);
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["stop_reason"], "time_limit");
    assert_eq!(summary["converged"], Value::Bool(false));
    let iterations = summary["iterations"].as_u64().unwrap();
    assert_eq!(checkpoint_step(&dir), iterations);

    // Resumed with more time, the pending evaluation comes first: it stops at the limit
    // again, and no step ran before it.
    let out = resume(&dir, &["--max-seconds", "19"]);
    assert!(out.success, "{}", out.stderr);
    let evaluation = format!("evaluating after step {iterations}");
    assert!(out.stderr.contains(&evaluation), "{}", out.stderr);
    assert!(
        out.stderr.contains("evaluation stopped (time limit)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        checkpoint_step(&dir),
        iterations,
        "a step ran before the evaluation"
    );
}
