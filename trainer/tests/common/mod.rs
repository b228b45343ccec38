//! Helpers shared by the command-line tests: they run the `trainer` binary as a user would.
#![allow(dead_code)]

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

/// A tiny, fast configuration of the synthetic task (converges in well under a second).
pub const TINY: &[&str] = &[
    "synthetic",
    "--quiet",
    "-n",
    "24",
    "--dim",
    "8",
    "--hidden",
    "8",
    "--embedding",
    "8",
    "--batch",
    "8",
    "--curriculum",
    "none",
    "--max-iterations",
    "400",
];

/// The binary, with two worker threads so runs are comparable.
pub fn trainer() -> Command {
    let mut command = Command::cargo_bin("trainer").expect("the trainer binary is built");
    command.env("RAYON_NUM_THREADS", "2");
    command
}

/// What a finished command printed.
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with `args` then `extra`.
pub fn run(args: &[&str], extra: &[&str]) -> Output {
    run_with_env(args, extra, &[])
}

/// Runs the binary with `args`, `extra` and environment variables.
pub fn run_with_env(args: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = trainer();
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command
        .args(args)
        .args(extra)
        .output()
        .expect("the trainer runs");
    Output {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `trainer synthetic --quiet --resume DIR extra…`.
pub fn resume(dir: &Path, extra: &[&str]) -> Output {
    run(
        &["synthetic", "--quiet", "--resume", dir.to_str().unwrap()],
        extra,
    )
}

pub fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

/// The `step` of every line of `metrics.jsonl`.
pub fn jsonl_steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).expect("a JSON line")["step"]
                .as_u64()
                .expect("a step")
        })
        .collect()
}

pub fn assert_failure(out: &Output, expected: &str) {
    assert!(
        !out.success,
        "expected a failure, got success:\n{}\n{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr.contains(expected),
        "stderr does not mention `{expected}`:\n{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("panicked"),
        "the binary panicked:\n{}",
        out.stderr
    );
}

/// Every file of a folder with its bytes, sorted by name.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// A tiny run of `iterations` steps in `dir` with extra flags; panics unless it succeeds.
pub fn tiny_run(dir: &Path, iterations: u64, extra: &[&str]) -> Output {
    let iterations = iterations.to_string();
    let mut args = vec![
        "--max-iterations",
        &iterations,
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = run(TINY, &args);
    assert!(out.success, "{}", out.stderr);
    out
}

/// Runs the binary with `args`, sends it SIGINT once `marker` appears on its stderr, and
/// returns what it printed in all (panics if it ends without printing `marker`).
#[cfg(unix)]
pub fn interrupt_at(args: &[&str], marker: &str) -> Output {
    use std::io::{BufRead, BufReader, Read};
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("trainer"))
        .env("RAYON_NUM_THREADS", "2")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the trainer starts");
    // Drained beside stderr, so a full stdout pipe never blocks the child.
    let mut stdout = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while !line.contains(marker) {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("`{marker}` never came:\n{seen}");
        }
        seen.push_str(&line);
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    stderr.read_to_string(&mut seen).unwrap();
    let status = child.wait().unwrap();
    Output {
        success: status.success(),
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: seen,
    }
}
