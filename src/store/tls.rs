//! [`TlsOptions`]: the certificates of a TLS connection to Redis (feature `tls`).

/// Certificates for [`Client::connect_tls`](crate::Client::connect_tls): a CA to trust instead
/// of the system's roots, and a client certificate with its key for servers that ask for one
/// (`tls-auth-clients yes`). All PEM. Key material is never printed.
#[derive(Clone, Default)]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub struct TlsOptions {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("client", &self.client.as_ref().map(|_| "<certificate and key>"))
            .finish()
    }
}

impl TlsOptions {
    /// No CA of its own (the system's roots) and no client certificate.
    pub fn new() -> TlsOptions {
        TlsOptions::default()
    }

    /// Trusts this CA (PEM) instead of the system's roots.
    #[must_use]
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> TlsOptions {
        self.ca = Some(pem.into());
        self
    }

    /// Presents this client certificate (PEM) with its private key (PEM).
    #[must_use]
    pub fn client_pem(mut self, certificate: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> TlsOptions {
        self.client = Some((certificate.into(), key.into()));
        self
    }

    /// Checks that every certificate and key is PEM this crate can use, naming the first that
    /// is not.
    pub(crate) fn check(&self) -> Result<(), String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certificates = |what: &str, pem: &[u8]| -> Result<(), String> {
            let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
            match parsed {
                Ok(certs) if !certs.is_empty() => Ok(()),
                Ok(_) => Err(format!("has a {what} that holds no PEM certificate")),
                Err(e) => Err(format!("has a {what} that is not usable PEM ({e})")),
            }
        };
        if let Some(ca) = &self.ca {
            certificates("CA", ca)?;
        }
        if let Some((certificate, key)) = &self.client {
            certificates("client certificate", certificate)?;
            PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("has a client key that is not usable PEM ({e})"))?;
        }
        Ok(())
    }

    pub(crate) fn certificates(self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self.client.map(|(client_cert, client_key)| redis::ClientTlsConfig { client_cert, client_key }),
            root_cert: self.ca,
        }
    }
}
