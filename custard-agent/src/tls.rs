//! TLS for `wss://`: one crypto provider (aws-lc-rs) for the process, and the
//! certificates the agent trusts: the system's (`rustls-native-certs`, which
//! reads `SSL_CERT_FILE`/`SSL_CERT_DIR` instead when they are set) plus the
//! PEM bundle of `CUSTARD_CA_FILE`, for a server behind a private CA.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// Installs aws-lc-rs as the process's default rustls provider, unless one is
/// installed already. rustls cannot pick one by itself when the build enables
/// no provider feature or more than one, and then panics on first use.
pub fn install_crypto_provider() {
    // An error only says a provider is installed already, which is all we need.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The TLS client configuration for `wss://` servers: the system's roots plus
/// the certificates of `ca_file`. A missing or unreadable CA file, or one
/// without a usable certificate, is an error naming the file.
pub(crate) fn client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!("reading the system's trusted certificates: {error}");
    }
    let (system, _unusable) = roots.add_parsable_certificates(native.certs);
    let mut private = 0;
    if let Some(path) = ca_file {
        for cert in ca_certificates(path)? {
            roots.add(cert).with_context(|| {
                format!(
                    "CUSTARD_CA_FILE {}: a certificate is not a usable CA certificate",
                    path.display()
                )
            })?;
            private += 1;
        }
    }
    if roots.is_empty() {
        tracing::warn!(
            "no trusted CA certificates: wss:// connections will fail (set SSL_CERT_FILE, or \
             CUSTARD_CA_FILE for a private CA)"
        );
    }
    tracing::debug!(system, private, "trusted CA certificates");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Every certificate of the PEM file at `path` (at least one).
fn ca_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let name = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("reading CUSTARD_CA_FILE {name}"))?;
    if certs.is_empty() {
        anyhow::bail!("CUSTARD_CA_FILE {name} holds no PEM certificate (BEGIN CERTIFICATE)");
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_default_provider_is_installed() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_named() {
        let dir = std::env::temp_dir().join(format!("custard-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("folder");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
            .expect("write");
        let not_der = dir.join("not-der.pem");
        std::fs::write(&not_der, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .expect("write");
        for path in [dir.join("missing.pem"), empty, garbage, not_der] {
            let err = format!("{:#}", client_config(Some(&path)).expect_err("refused"));
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
