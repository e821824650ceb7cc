//! Child processes of the benches, with the peak resident size of each.

use std::os::unix::process::CommandExt as _;
use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Duration;

use anyhow::{Context as _, ensure};

/// Makes `command`'s process die with this one (`PR_SET_PDEATHSIG`), so
/// that a bench killed part-way leaves no `copiste` process behind.
pub fn die_with_parent(command: &mut std::process::Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child's
    // own state, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A child process, with the peak resident size of its own program.
///
/// The peak is the `VmHWM` line of `/proc/PID/status` (the high-water mark
/// of the memory of the program the process executed), read every
/// [`SAMPLE_EVERY`] while it runs, so that only growth in its last
/// [`SAMPLE_EVERY`] escapes. Not `wait4`'s `ru_maxrss`: Linux folds into
/// it the peak of the memory the child dropped at `exec`, which after a
/// `fork` is a copy of this process's, so every child was reported at
/// least at the bench's own size (823 MiB at F = 1.0 for workers of tens
/// of MiB).
pub struct Child {
    pub what: String,
    pid: libc::pid_t,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<()>,
}

/// How often a child's peak resident size is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The `VmHWM` of process `pid`, in bytes; `None` once it has exited.
fn vm_hwm(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Child {
    pub fn spawn(what: &str, mut command: std::process::Command) -> anyhow::Result<Self> {
        // `spawn` returns once the program is executed (std waits for the
        // exec), so the first sample is already the program's own.
        let child = command
            .spawn()
            .with_context(|| format!("starting copiste {what}"))?;
        let pid = libc::pid_t::try_from(child.id()).context("a process id out of range")?;
        // Reaped by `wait` below; the handle is dropped without waiting
        // (that does not kill the process).
        drop(child);
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = std::thread::Builder::new()
            .name(format!("rss-{pid}"))
            .spawn({
                let (peak, stop) = (peak.clone(), stop.clone());
                move || {
                    while !stop.load(Ordering::Acquire) {
                        if let Some(hwm) = vm_hwm(pid) {
                            peak.fetch_max(hwm, Ordering::Relaxed);
                        }
                        std::thread::sleep(SAMPLE_EVERY);
                    }
                }
            })
            .context("starting a sampler thread")?;
        Ok(Self {
            what: what.to_owned(),
            pid,
            peak,
            stop,
            sampler,
        })
    }

    /// Waits for the process to end; returns its exit code (128 + the
    /// signal when killed) and its peak resident size in bytes.
    pub async fn wait(self) -> anyhow::Result<(i32, u64)> {
        let Self {
            what,
            pid,
            peak,
            stop,
            sampler,
        } = self;
        let status = tokio::task::spawn_blocking(move || {
            // Waits for the end without reaping (WNOWAIT): the process id
            // stays ours while the sampler stops, so it never reads
            // another process that reused it.
            // SAFETY: siginfo_t is plain data that waitid fills.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            loop {
                // SAFETY: our own child, which nothing else reaps.
                let waited = unsafe {
                    libc::waitid(
                        libc::P_PID,
                        libc::id_t::try_from(pid).unwrap_or(0),
                        &mut info,
                        libc::WEXITED | libc::WNOWAIT,
                    )
                };
                if waited == 0 {
                    break;
                }
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            stop.store(true, Ordering::Release);
            let _ = sampler.join();
            let mut status = 0;
            // SAFETY: as above; reaps it now.
            let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
            if reaped == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(status)
        })
        .await
        .context("waiting for a child")?
        .with_context(|| format!("waiting for copiste {what}"))?;
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        Ok((code, peak.load(Ordering::Relaxed)))
    }

    /// SIGTERM, then waits (SIGKILL after 30 s).
    pub async fn stop(self) -> anyhow::Result<u64> {
        let pid = self.pid;
        // SAFETY: kill only signals our own child, not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let what = self.what.clone();
        let killer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            // SAFETY: as above; the waiter below has not reaped it.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        });
        let (code, rss) = self.wait().await?;
        killer.abort();
        ensure!(
            code == 0 || code == 128 + libc::SIGTERM,
            "copiste {what} ended with {code} when stopped"
        );
        Ok(rss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small child of a large process is reported at its own size: the
    /// bench grew to 823 MiB at F = 1.0 and every process it started
    /// afterwards was reported at 823 MiB.
    #[tokio::test]
    async fn a_childs_peak_is_its_own_not_its_parents() {
        // This process holds 256 MiB of touched memory when it forks.
        let big = vec![1u8; 256 << 20];
        let mut command = std::process::Command::new("sleep");
        command.arg("0.5");
        die_with_parent(&mut command);
        let child = Child::spawn("sleep", command).expect("sleep starts");
        let (code, peak) = child.wait().await.expect("sleep ends");
        assert_eq!(code, 0);
        assert!(std::hint::black_box(&big).iter().all(|b| *b == 1));
        assert!(peak > 0, "no peak measured");
        assert!(
            peak < 32 << 20,
            "sleep reported at {} MiB, its parent's size",
            peak >> 20
        );
    }
}
