//! The rustls connector for `sslmode=prefer|require`: ring as the crypto
//! provider (no aws-lc: it needs a C toolchain to cross-compile), and the
//! platform's CA certificates plus a given CA file as the roots.

use crate::Error;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The certificates of the PEM file at `path`: at least one, or an error
/// naming the file.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| Error::CaFile {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::CaFileEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// A connector trusting the platform's CA certificates and `extra`.
pub(crate) fn connector(extra: Vec<CertificateDer<'static>>) -> Result<MakeRustlsConnect, Error> {
    let mut roots = RootCertStore::empty();
    // Certificates rustls cannot use (expired roots in the system bundle,
    // odd encodings) are skipped: the others still verify servers.
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "loading the platform's CA certificates");
    }
    roots.add_parsable_certificates(native.certs);
    for cert in extra {
        roots.add(cert).map_err(Error::CaCertificate)?;
    }
    if roots.is_empty() {
        // Every handshake would fail with "unknown issuer"; say why now.
        return Err(Error::NoTrustedCertificates);
    }
    // Our own provider, not the process default: nothing else has to
    // install one, and another crate's choice cannot change ours.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::CaCertificate)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Whether rustls refused the connection (a certificate that does not
/// verify, a protocol mismatch): the same server will refuse it again.
pub(crate) fn rejected_by_rustls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        // An io::Error's `source()` skips the error it wraps; look at it.
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return true;
            }
        }
        cur = err.source();
    }
    false
}
