//! The `copiste` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser as _;
use copiste::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    copiste::cli::init_tracing(cli.log_format);
    match cli.run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
