//! The `copiste` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser as _;
use copiste_cli::Cli;

fn main() -> ExitCode {
    copiste::memory::return_large_buffers_to_the_system();
    let cli = Cli::parse();
    if !cli.is_long_running() {
        quiet_on_closed_stdout();
    }
    let config = cli.load_config();
    copiste_cli::init_tracing(cli.log_format(config.as_ref().ok()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.run(config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lets a command that prints and exits die quietly of SIGPIPE, as Unix
/// tools do, when its reader goes away (`copiste jobs show --json | head`),
/// instead of panicking on the failed write. Long-running roles keep Rust's
/// default (SIGPIPE ignored, EPIPE returned as an error). Sockets are
/// unaffected: they are written with MSG_NOSIGNAL.
fn quiet_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: called at start-up on the main thread, before any other
    // thread exists; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
