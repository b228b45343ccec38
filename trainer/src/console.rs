//! What a command prints while it works: a progress bar (or, when it is hidden, a status
//! line every ten seconds), log lines that never tear the bar, and one-line progress
//! notes for the benchmarks.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the status line is printed when the bar is hidden.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// The console of a long loop: a bar over `total` iterations and log lines through it.
pub struct Console {
    bar: ProgressBar,
    last_status: Instant,
    /// Prints nothing at all (the processes of a distributed run other than rank 0).
    silent: bool,
}

impl Console {
    /// A bar at `position` of `total` iterations; hidden with `quiet` (and by indicatif
    /// when stderr is not a terminal).
    pub fn progress(total: u64, position: u64, quiet: bool) -> Self {
        let silent = !crate::distributed::writes_files();
        let bar = if quiet || silent {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new(total)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:24}] {pos}/{len} it  {msg}  ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_position(position);
        bar.enable_steady_tick(Duration::from_millis(250));
        Self {
            bar,
            last_status: Instant::now(),
            silent,
        }
    }

    /// Prints a log line above the bar (or plainly when the bar is hidden).
    pub fn line(&self, text: impl AsRef<str>) {
        if self.silent {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{}", text.as_ref());
        } else {
            self.bar.println(text.as_ref());
        }
    }

    /// Moves the bar to `position` with `message`; when the bar is hidden, prints
    /// `step <position> (<wall> s): <message>` at most every ten seconds.
    pub fn update(&mut self, position: u64, wall_seconds: f64, message: String) {
        self.bar.set_position(position);
        self.print_status(|| format!("  step {position} ({wall_seconds:.0} s): {message}"));
        self.bar.set_message(message);
    }

    /// Shows `message` beside the bar, for work between iterations; when the bar is
    /// hidden, prints it at most every ten seconds.
    pub fn status(&mut self, message: String) {
        self.print_status(|| format!("  {message}"));
        self.bar.set_message(message);
    }

    /// Prints `line()` when the bar is hidden and the last status line is ten seconds old.
    fn print_status(&mut self, line: impl FnOnce() -> String) {
        if !self.silent && self.bar.is_hidden() && self.last_status.elapsed() >= STATUS_EVERY {
            self.last_status = Instant::now();
            eprintln!("{}", line());
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// Shows `text` on one line of stderr, overwritten by the next note (a line of its own
/// when stderr is not a terminal, such as a log file).
pub fn note_in_place(text: &str) {
    if std::io::stderr().is_terminal() {
        eprint!("\r{text}        ");
        let _ = std::io::stderr().flush();
    } else {
        eprintln!("{text}");
    }
}

/// Clears the line of [`note_in_place`].
pub fn clear_note() {
    if std::io::stderr().is_terminal() {
        eprintln!("\r                                ");
    }
}

/// `x` for a message: plain when it reads well that way, in scientific notation when it
/// is very large or very small (`1e300`, not 301 digits).
pub fn number(x: f64) -> String {
    let magnitude = x.abs();
    if x == 0.0 || !x.is_finite() || (1e-4..1e15).contains(&magnitude) {
        x.to_string()
    } else {
        format!("{x:e}")
    }
}
