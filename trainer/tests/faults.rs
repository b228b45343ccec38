//! Fault injection: a run killed with SIGKILL at seeded random moments (training,
//! checkpoint writes, resume) and resumed each time ends exactly as an uninterrupted run,
//! and after every kill the metrics hold one row per step up to the checkpoint. Eight kills
//! within 0.6 s of each start bound the test to a few seconds.
#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{jsonl_steps, TINY};
use surrogate_rnn::{load_checkpoint, Parameters};

/// A limit the killed run never reaches; its last resume sets the real end.
const UNREACHED: u64 = 1_000_000;
const KILLS: usize = 8;
/// Kills come at a seeded random moment within this many milliseconds of a start.
const MAX_DELAY_MS: u64 = 600;

/// xorshift64*: a seeded, dependency-free source of kill delays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("trainer"));
    command
        .env("RAYON_NUM_THREADS", "2")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn start_args(dir: &Path, iterations: u64) -> Vec<String> {
    let iterations = iterations.to_string();
    TINY.iter()
        .copied()
        .chain([
            "--streak",
            "100000",
            "--checkpoint-every",
            "1",
            "--max-iterations",
            &iterations,
            "--out",
            dir.to_str().unwrap(),
        ])
        .map(str::to_owned)
        .collect()
}

/// Parameters and Adam step of the run's checkpoint, `None` when there is none yet.
fn checkpoint(dir: &Path) -> Option<(Vec<Vec<u32>>, u64)> {
    let path = dir.join("checkpoint.safetensors");
    if !path.exists() {
        return None;
    }
    let (model, adam, _) = load_checkpoint::<f32>(&path).expect("a readable checkpoint");
    let mut params = Vec::new();
    model.visit_params(&mut |_, value, _| params.push(value.iter().map(|v| v.to_bits()).collect()));
    Some((params, adam.steps()))
}

/// Steps of the well-formed rows of metrics.jsonl, stopping at a partial last line.
fn complete_rows(dir: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .map_while(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|row| row["step"].as_u64().unwrap())
        .collect()
}

fn loss_column(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').take(6).collect::<Vec<_>>().join(","))
        .collect()
}

#[test]
fn runs_killed_at_random_points_resume_to_the_uninterrupted_result() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("killed");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut resumes_killed = 0;
    for kill in 0..KILLS {
        let resume = dir.join("run.json").exists() && dir.join("checkpoint.safetensors").exists();
        let args: Vec<String> = if resume {
            ["synthetic", "--quiet", "--resume", dir.to_str().unwrap()]
                .map(str::to_owned)
                .to_vec()
        } else {
            // Killed before its first checkpoint: start again.
            let mut args = start_args(&dir, UNREACHED);
            args.push("--force".into());
            args
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = command(&args).spawn().unwrap();
        let delay = Duration::from_millis(rng.below(MAX_DELAY_MS));
        std::thread::sleep(delay);
        assert!(
            child.try_wait().unwrap().is_none(),
            "kill {kill}: the run ended before it was killed"
        );
        child.kill().unwrap();
        let _ = child.wait();
        resumes_killed += usize::from(resume);
        if let Some((_, step)) = checkpoint(&dir) {
            let rows = complete_rows(&dir);
            assert!(
                rows.len() as u64 >= step
                    && rows[..step as usize] == (1..=step).collect::<Vec<_>>()[..],
                "kill {kill} (after {delay:?}): the checkpoint is at step {step} but the \
                 metrics hold {rows:?}"
            );
        }
    }
    assert!(resumes_killed >= 1, "no kill hit a resumed run");

    // The last resume runs a few steps past the checkpoint and ends there.
    let step = checkpoint(&dir).map_or(0, |(_, step)| step);
    eprintln!("after {KILLS} kills the checkpoint is at step {step}");
    let end = step + 5;
    let end_flag = end.to_string();
    let args: Vec<String> = if step == 0 {
        start_args(&dir, end)
            .into_iter()
            .chain(["--force".to_owned()])
            .collect()
    } else {
        [
            "synthetic",
            "--quiet",
            "--resume",
            dir.to_str().unwrap(),
            "--max-iterations",
            &end_flag,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = command(&args).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let straight = temp.path().join("straight");
    let args = start_args(&straight, end);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(command(&args).status().unwrap().success());
    assert_eq!(jsonl_steps(&dir), (1..=end).collect::<Vec<_>>());
    assert_eq!(checkpoint(&dir).unwrap(), checkpoint(&straight).unwrap());
    assert_eq!(loss_column(&dir), loss_column(&straight));
}
