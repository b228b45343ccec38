//! Fault injection: a run killed with SIGKILL at random moments (training, checkpoint
//! writes, resume) and resumed each time ends exactly as an uninterrupted run, and after
//! every kill the metrics hold one row per step up to the checkpoint.
#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{jsonl_steps, TINY};
use surrogate_rnn::{load_checkpoint, Parameters};

const ITERATIONS: u64 = 150;
const KILLS: usize = 8;

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

fn start_args(dir: &Path) -> Vec<String> {
    let iterations = ITERATIONS.to_string();
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
    let straight = temp.path().join("straight");
    let args = start_args(&straight);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let status = command(&args).status().unwrap();
    assert!(status.success());
    let reference = checkpoint(&straight).unwrap();
    assert_eq!(reference.1, ITERATIONS);
    // How long an uninterrupted run takes bounds the kill delays.
    let started = Instant::now();
    let probe = temp.path().join("probe");
    let args = start_args(&probe);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(command(&args).status().unwrap().success());
    let span_ms = (started.elapsed().as_millis() as u64).max(50);

    let dir = temp.path().join("killed");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut kills = 0;
    let mut resumes_killed = 0;
    let mut finished = false;
    for attempt in 0..KILLS + 10 {
        let resume = dir.join("run.json").exists() && dir.join("checkpoint.safetensors").exists();
        let args: Vec<String> = if resume {
            ["synthetic", "--quiet", "--resume", dir.to_str().unwrap()]
                .map(str::to_owned)
                .to_vec()
        } else {
            let mut args = start_args(&dir);
            args.push("--force".into());
            args
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = command(&args).spawn().unwrap();
        if kills < KILLS {
            let delay = Duration::from_millis(rng.below(span_ms * 3 / 5));
            std::thread::sleep(delay);
            if let Some(status) = child.try_wait().unwrap() {
                // It finished before the kill.
                assert!(status.success(), "attempt {attempt} failed");
                finished = true;
                break;
            }
            child.kill().unwrap();
            let _ = child.wait();
            kills += 1;
            resumes_killed += usize::from(resume);
            if let Some((_, step)) = checkpoint(&dir) {
                let rows = complete_rows(&dir);
                assert!(
                    rows.len() as u64 >= step
                        && rows[..step as usize] == (1..=step).collect::<Vec<_>>()[..],
                    "kill {kills} (attempt {attempt}, after {delay:?}): the checkpoint is at \
                     step {step} but the metrics hold {rows:?}"
                );
            }
        } else {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            finished = true;
            break;
        }
    }
    assert!(finished);
    assert!(
        resumes_killed >= KILLS / 2,
        "only {resumes_killed} of {kills} kills hit a resumed run"
    );
    assert_eq!(jsonl_steps(&dir), (1..=ITERATIONS).collect::<Vec<_>>());
    assert_eq!(checkpoint(&dir).unwrap(), reference);
    assert_eq!(loss_column(&dir), loss_column(&straight));
}
