//! The process's TLS provider.
//!
//! Every TLS client of copiste (sqlx's connections, reqwest's clients for
//! Cyclades, Imag'In and the S3 store) runs on rustls with the `ring`
//! provider. reqwest and object_store are built without a provider of
//! their own (their default, aws-lc-rs, is a C library whose build was a
//! minute of a clean build, for nothing ring does not already do here),
//! so rustls' process-wide default must be installed before any of their
//! clients is built: [`http_client`] and [`crate::storage::Storage::open`]
//! do it, whatever the entry point (the binary, a test, a bench).

use std::sync::Once;

/// Installs ring as rustls' process-wide provider, once; later calls do
/// nothing. Another provider installed first (by an embedding program)
/// is kept.
pub fn install_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // An error means a provider is already installed: it is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A reqwest client builder, with the process's TLS provider installed.
pub fn http_client() -> reqwest::ClientBuilder {
    install_provider();
    reqwest::Client::builder()
}
