//! Bad input is refused before any work: a message that names the problem, no panic, no
//! abort, no folder left behind.

mod common;

use common::{assert_failure, run, TINY};

const HUGE: &str = "18446744073709551615";

/// Runs `args` with `--runs-dir` (synthetic) or `--out` (benchmarks) inside a fresh
/// folder and checks that it fails with `expected` and creates nothing.
fn refused<S: AsRef<str>>(args: &[S], expected: &str) {
    let temp = tempfile::tempdir().unwrap();
    let place = temp.path().join("out");
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let mut all = args.clone();
    if args[0] == "synthetic" {
        all.extend(["--runs-dir", place.to_str().unwrap()]);
    } else {
        all.extend(["--out", place.to_str().unwrap()]);
    }
    let out = run(&all, &[]);
    assert_failure(&out, expected);
    assert!(
        !place.exists(),
        "{args:?} left `{}` behind",
        place.display()
    );
}

fn synthetic(extra: &[&str]) -> Vec<String> {
    TINY.iter().chain(extra).map(|s| s.to_string()).collect()
}

#[test]
fn sizes_are_checked_before_any_work() {
    refused(&synthetic(&["--dim", HUGE]), "too large");
    refused(
        &synthetic(&["--model", "qrnn", "--qrnn-width", HUGE]),
        "too large",
    );
    refused(&synthetic(&["--dim", "4294967296"]), "memory");
    refused(
        &synthetic(&["--hidden", "1048576", "-n", "1", "--batch", "8"]),
        "memory",
    );
    refused(
        &synthetic(&["--model", "qrnn", "--qrnn-width", "1073741824"]),
        "memory",
    );
    refused(&synthetic(&["--threads", "100000"]), "--threads");
    refused(&synthetic(&["--threads", HUGE]), "--threads");
    refused(
        &synthetic(&["--dim", "4294967296", "--embedding", "1"]),
        "dim",
    );
    refused(&synthetic(&["--eval-sequences", HUGE]), "--eval-sequences");
}

#[test]
fn benchmark_sizes_are_checked_and_leave_no_folder() {
    refused(&["kernel-bench", "--features", HUGE], "too large");
    refused(&["kernel-bench", "--steps", "1099511627776"], "memory");
    refused(
        &["rnn-bench", "--events", "1099511627776", "--steps", "16"],
        "memory",
    );
    refused(&["rnn-bench", "--hidden", "1048576"], "memory");
    refused(&["rnn-bench", "--iterations", HUGE], "timed steps");
    refused(&["kernel-bench", "--steps", "0"], "at least 1");
}

#[test]
fn values_are_checked_before_any_work() {
    refused(
        &synthetic(&["--init", "constant", "--forget-bias", "NaN"]),
        "--forget-bias",
    );
    refused(
        &synthetic(&["--init", "constant", "--forget-bias", "inf"]),
        "--forget-bias",
    );
    refused(&synthetic(&["--max-seconds", "NaN"]), "--max-seconds");
    refused(&["reproduce", "--lstm-max-seconds=0"], "--lstm-max-seconds");
    refused(
        &["reproduce", "--budget", "full", "--million-max-seconds=NaN"],
        "--million-max-seconds must be positive",
    );
    refused(&["reproduce", "--lstm-max-seconds=-1e300"], "(got -1e300)");
}

#[test]
fn flags_the_other_settings_leave_unused_are_refused() {
    refused(
        &synthetic(&["--forget-bias", "2"]),
        "--forget-bias applies to --init constant only",
    );
    refused(
        &synthetic(&["--init", "zero", "--chrono-max-len", "10"]),
        "--chrono-max-len applies to --init chrono only",
    );
    refused(
        &synthetic(&["--model", "sru", "--qrnn-width", "3"]),
        "--qrnn-width applies to --model qrnn only",
    );
    refused(
        &synthetic(&["--model", "lstm", "--gilr-output", "linear"]),
        "--gilr-output applies to --model gilr-lstm only",
    );
    refused(
        &["reproduce", "--million-max-seconds", "5"],
        "applies to --budget full only",
    );
    refused(
        &["reproduce", "--resume", "somewhere", "--budget", "full"],
        "cannot be used with",
    );
    // The values that do apply are accepted.
    let temp = tempfile::tempdir().unwrap();
    let runs = temp.path().to_str().unwrap();
    for flags in [
        &["--init", "constant", "--forget-bias", "2"][..],
        &["--chrono-max-len", "1"],
        &["--model", "qrnn", "--qrnn-width", "3"],
    ] {
        let out = run(
            TINY,
            &[flags, &["--max-iterations", "2", "--runs-dir", runs]].concat(),
        );
        assert!(out.success, "{flags:?}: {}", out.stderr);
    }
}

#[test]
fn a_huge_streak_is_no_overflow() {
    let temp = tempfile::tempdir().unwrap();
    let out = run(
        TINY,
        &[
            "--streak",
            "4611686018427387904",
            "--max-iterations",
            "2",
            "--runs-dir",
            temp.path().to_str().unwrap(),
        ],
    );
    assert!(out.success, "{}", out.stderr);
}

#[test]
fn runs_dir_naming_a_file_fails_at_once() {
    let temp = tempfile::tempdir().unwrap();
    let file = temp.path().join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let out = run(TINY, &["--runs-dir", file.to_str().unwrap()]);
    assert_failure(&out, "is not a folder");
}
