//! The `copiste` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser as _;
use copiste::cli::Cli;

fn main() -> ExitCode {
    copiste::memory::return_large_buffers_to_the_system();
    let cli = Cli::parse();
    copiste::cli::init_tracing(cli.log_format);
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
    match runtime.block_on(cli.run()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
