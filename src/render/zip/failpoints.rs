//! Failpoints of a zip build, for the integration tests: they stop a
//! build (it fails, or hangs as a killed process would) once a number of
//! its parts are staged, once a number of chunks of its part in progress
//! are recorded, or (it fails) once a number of entries are written.
//!
//! They go through the `fail` crate and exist only with the `failpoints`
//! feature of this crate, which the integration tests (`copiste-cli`'s
//! dev-dependency) turn on: nothing of them is compiled into the release
//! binary.
//!
//! `fail` keeps one registry per process, and the integration tests run
//! concurrently in one process. So that one test's failpoint never stops
//! another test's build, each failpoint's name starts with the staging
//! folder of the build it stops (`downloads/.staging/<job id>` for a job,
//! a folder of its own for each test's direct build), which no two builds
//! share, and ends with the count it fires at: `<staging folder>: 3 parts
//! staged`. No test needs the registry to itself (as a
//! `fail::FailScenario` would, serialising them). Each failpoint fires
//! once (`1*return(…)`), and a build that hangs says so through a second
//! failpoint, `<staging folder>: stopped`, whose callback sets the flag
//! of [`Armed::reached`]: a test waits on that condition instead of
//! sleeping.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use anyhow::anyhow;

use super::{ZipProgress, build::Builder, upload::OpenPart};

/// What an armed failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The build fails with an error.
    Fail,
    /// The build waits for ever (until its task is aborted or dropped),
    /// once what it handed over is written.
    Hang,
}

impl Action {
    /// The argument of `fail`'s `return` that stands for this action.
    fn arg(self) -> &'static str {
        match self {
            Action::Fail => "fail",
            Action::Hang => "hang",
        }
    }
}

/// A failpoint armed for a build.
#[derive(Debug, Clone)]
pub struct Armed {
    reached: Arc<AtomicBool>,
}

impl Armed {
    /// Whether the build stopped there with [`Action::Hang`]: it does
    /// nothing more.
    pub fn reached(&self) -> bool {
        self.reached.load(Ordering::SeqCst)
    }
}

/// The name of the failpoint of the build staging in `staging_dir` that
/// fires once `n` of `what` are done.
fn name(staging_dir: &str, n: usize, what: &str) -> String {
    format!("{}: {n} {what}", staging_dir.trim_end_matches('/'))
}

/// The name of the failpoint a build passes once it hangs.
fn stopped_name(staging_dir: &str) -> String {
    format!("{}: stopped", staging_dir.trim_end_matches('/'))
}

/// Arms the failpoint `name` of the build staging in `staging_dir`, once.
fn arm(staging_dir: &str, name: String, action: Action) -> anyhow::Result<Armed> {
    let reached = Arc::new(AtomicBool::new(false));
    let flag = reached.clone();
    fail::cfg_callback(stopped_name(staging_dir), move || {
        flag.store(true, Ordering::SeqCst);
    })
    .map_err(|e| anyhow!("arming {staging_dir}'s failpoints: {e}"))?;
    fail::cfg(name.clone(), &format!("1*return({})", action.arg()))
        .map_err(|e| anyhow!("arming {name}: {e}"))?;
    Ok(Armed { reached })
}

/// Arms a failpoint, once, for the build staging in `staging_dir`: it
/// fires when `parts` parts are staged (counting those resumed, checked
/// when the run starts and after each part it stages).
pub fn after_parts(staging_dir: &str, parts: usize, action: Action) -> anyhow::Result<Armed> {
    arm(
        staging_dir,
        name(staging_dir, parts, "parts staged"),
        action,
    )
}

/// Arms a failpoint, once, for the build staging in `staging_dir`: it
/// fires when the upload of the part in progress has `chunks` chunks
/// recorded (counting those of an earlier run, checked after each chunk
/// this run records), once that record is written and the chunks in
/// flight are.
pub fn after_chunks(staging_dir: &str, chunks: usize, action: Action) -> anyhow::Result<Armed> {
    arm(
        staging_dir,
        name(staging_dir, chunks, "chunks recorded"),
        action,
    )
}

/// Arms a failpoint, once, for the build staging in `staging_dir`: its
/// zip thread fails once it has written `entries` copies (counting those
/// of the parts resumed).
pub fn after_entries(staging_dir: &str, entries: u32) -> anyhow::Result<Armed> {
    let entries = usize::try_from(entries)?;
    arm(
        staging_dir,
        name(staging_dir, entries, "entries written"),
        Action::Fail,
    )
}

/// What the failpoint `name` does now, if it fires.
fn fired(name: &str) -> Option<Action> {
    fail::fail_point!(name, |arg: Option<String>| Some(match arg.as_deref() {
        Some("hang") => Action::Hang,
        _ => Action::Fail,
    }));
    None
}

/// Does what a fired failpoint says: fails, or hangs once it says so.
async fn stop(staging_dir: &str, action: Action, at: &str) -> anyhow::Result<()> {
    match action {
        Action::Fail => Err(anyhow!("injected failure at {at}")),
        Action::Hang => {
            tracing::info!(at, "a failpoint stops the build here");
            fail::fail_point!(&stopped_name(staging_dir));
            std::future::pending().await
        }
    }
}

/// Fires the failpoint of the build staging in `staging_dir` if it is
/// armed for `parts` staged parts (its checkpoint is written).
pub(super) async fn check_parts(staging_dir: &str, parts: usize) -> anyhow::Result<()> {
    let at = name(staging_dir, parts, "parts staged");
    match fired(&at) {
        None => Ok(()),
        Some(action) => stop(staging_dir, action, &at).await,
    }
}

/// Fails the zip thread of the build staging in `staging_dir` if its
/// failpoint is armed for `entries` written copies.
pub(super) fn check_entries(staging_dir: &str, entries: u32) -> anyhow::Result<()> {
    let at = name(staging_dir, entries as usize, "entries written");
    match fired(&at) {
        None => Ok(()),
        Some(_) => Err(anyhow!("injected failure at {at}")),
    }
}

impl Builder<'_> {
    /// Fires the build's failpoint if it is armed for the chunks that
    /// `recorded` has of the part in progress, once their checkpoint is
    /// written and the chunks still in flight are (not recorded): a
    /// process killed there leaves no write of its own going on.
    pub(super) async fn stop_after_chunks(
        &self,
        open: &mut OpenPart,
        recorded: &ZipProgress,
    ) -> anyhow::Result<()> {
        let chunks = recorded.upload.as_ref().map_or(0, |u| u.chunks.len());
        let at = name(&self.plan.staging_dir, chunks, "chunks recorded");
        let Some(action) = fired(&at) else {
            return Ok(());
        };
        self.flush().await?;
        open.drain().await;
        stop(&self.plan.staging_dir, action, &at).await
    }
}
