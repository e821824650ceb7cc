//! Progress of `copiste demo-data` on stderr: a bar in a terminal, and
//! otherwise (logs, CI, a pipe) a plain line now and then, so that a run
//! of many minutes is never silent.

use std::{
    io::{IsTerminal as _, Write},
    sync::Mutex,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a progress line is written when stderr is not a terminal.
pub const LINE_INTERVAL: Duration = Duration::from_secs(10);

/// Reports scans written out of all; shared by the rendering threads.
pub struct Progress {
    display: Display,
}

enum Display {
    /// An indicatif bar on a terminal.
    Bar(ProgressBar),
    /// Plain lines written at most every `interval`, and at the end.
    Lines(Mutex<Lines>),
}

struct Lines {
    out: Box<dyn Write + Send>,
    interval: Duration,
    started: Instant,
    /// When the last line was written (the start before the first).
    last: Instant,
    /// Whether the final line was written.
    finished: bool,
}

impl Progress {
    /// A bar on stderr when it is a terminal, plain lines every
    /// [`LINE_INTERVAL`] otherwise.
    pub fn stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::bar()
        } else {
            Self::lines(Box::new(std::io::stderr()), LINE_INTERVAL)
        }
    }

    /// A bar drawn by indicatif on stderr, ticking from the start so that
    /// it shows before the first scan is written.
    fn bar() -> Self {
        let style = ProgressStyle::with_template(
            "{spinner} {msg} [{wide_bar}] {human_pos}/{human_len} {elapsed} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = ProgressBar::new(0)
            .with_style(style)
            .with_message("writing scans");
        bar.enable_steady_tick(Duration::from_millis(200));
        Self {
            display: Display::Bar(bar),
        }
    }

    /// Plain lines to `out`: at most one every `interval`, and one when
    /// the last scan is written.
    pub fn lines(out: Box<dyn Write + Send>, interval: Duration) -> Self {
        let now = Instant::now();
        Self {
            display: Display::Lines(Mutex::new(Lines {
                out,
                interval,
                started: now,
                last: now,
                finished: false,
            })),
        }
    }

    /// Records that `done` scans of `total` are written.
    pub fn update(&self, done: u64, total: u64) {
        match &self.display {
            Display::Bar(bar) => {
                bar.set_length(total);
                bar.set_position(done);
            }
            Display::Lines(lines) => {
                let Ok(mut lines) = lines.lock() else {
                    return;
                };
                let now = Instant::now();
                let last = done >= total;
                if (last && !lines.finished) || now.duration_since(lines.last) >= lines.interval {
                    lines.finished |= last;
                    lines.last = now;
                    let elapsed = now.duration_since(lines.started);
                    let line = line(done, total, elapsed);
                    // Progress is best effort: a closed stderr stops nothing.
                    let _ = writeln!(lines.out, "{line}");
                    let _ = lines.out.flush();
                }
            }
        }
    }

    /// Clears the bar; lines stay.
    pub fn finish(&self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
        }
    }
}

/// One progress line: `demo-data: 120/4800 scans written (2%), 10 s
/// elapsed, about 6 min 40 s left`.
fn line(done: u64, total: u64, elapsed: Duration) -> String {
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    let mut line = format!(
        "demo-data: {done}/{total} scans written ({percent}%), {} elapsed",
        human(elapsed)
    );
    if done > 0 && done < total {
        let left = elapsed.mul_f64((total - done) as f64 / done as f64);
        line.push_str(&format!(", about {} left", human(left)));
    }
    line
}

/// A duration in hours, minutes and seconds, to the second.
fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 3600, seconds / 60 % 60, seconds % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A writer whose bytes the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(out: &Shared) -> String {
        String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8")
    }

    #[test]
    fn lines_are_throttled_and_the_last_is_always_written() {
        let out = Shared::default();
        let progress = Progress::lines(Box::new(out.clone()), Duration::from_secs(3600));
        for done in 1..=99 {
            progress.update(done, 100);
        }
        assert_eq!(text(&out), "", "nothing before the interval");
        progress.update(100, 100);
        progress.update(100, 100);
        let written = text(&out);
        assert_eq!(written.lines().count(), 1, "{written}");
        assert!(
            written.starts_with("demo-data: 100/100 scans written (100%), "),
            "{written}"
        );

        let out = Shared::default();
        let progress = Progress::lines(Box::new(out.clone()), Duration::ZERO);
        progress.update(1, 4);
        progress.update(2, 4);
        let written = text(&out);
        assert_eq!(written.lines().count(), 2, "{written}");
        assert!(
            written.starts_with("demo-data: 1/4 scans written (25%), "),
            "{written}"
        );
    }

    #[test]
    fn lines_read_well() {
        assert_eq!(
            line(120, 4800, Duration::from_secs(10)),
            "demo-data: 120/4800 scans written (2%), 10 s elapsed, about 6 min 30 s left"
        );
        assert_eq!(human(Duration::from_secs(3 * 3600 + 125)), "3 h 2 min");
        assert_eq!(
            line(0, 0, Duration::ZERO),
            "demo-data: 0/0 scans written (100%), 0 s elapsed"
        );
    }
}
