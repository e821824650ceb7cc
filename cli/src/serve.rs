//! `copiste serve`: the HTTP front door (pages, JSON API, the local
//! store's download links, metrics and health), until SIGTERM/SIGINT.

use std::{net::SocketAddr, process::ExitCode};

use clap::Args;

use copiste::app::App;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

impl ServeArgs {
    /// Serves the pages, the API and the download links until SIGTERM/SIGINT.
    pub async fn run(self, app: &App) -> anyhow::Result<ExitCode> {
        if app.config.downloads.signing_key.is_none() {
            tracing::warn!(
                "no links' signing key (COPISTE_DOWNLOADS__SIGNING_KEY): /downloads/ links are not served"
            );
        }
        let router = copiste::web::router(app.clone());
        let _sampler = copiste::telemetry::spawn_ledger_sampler(app.clone());
        copiste::web::serve(self.listen, router, super::shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    }
}
