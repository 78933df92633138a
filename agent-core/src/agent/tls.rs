//! TLS settings: towards the relay (web PKI roots, the system store and `--ca-file`; or a
//! public-key pin; or nothing with `--tls-insecure`) and towards service targets (no
//! certificate verification: appliance-local targets have self-signed certificates).

use std::prelude::rust_2024::*;
use std::{format, vec};

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::config::{AgentConfig, ConfigError};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, ConfigError> {
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::Tls)
}

/// The client settings for the relay connection; reads the system store and `ca_file`.
pub(crate) fn relay_client_config(config: &AgentConfig) -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = if let Some(pin) = config.relay_pin {
        if config.tls_insecure {
            tracing::warn!("--tls-insecure is ignored: the relay pin is checked");
        }
        Arc::new(KeyCheck {
            pin: Some(pin),
            algorithms,
        })
    } else if config.tls_insecure {
        tracing::warn!("--tls-insecure: the relay certificate is not verified");
        Arc::new(KeyCheck {
            pin: None,
            algorithms,
        })
    } else {
        let roots = Arc::new(root_store(config)?);
        WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| ConfigError::Tls(rustls::Error::General(e.to_string())))?
    };
    let mut tls = builder(provider)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// Client settings for `tls: true` service targets: any certificate is accepted (the
/// handshake signature is still checked against it).
pub(crate) fn target_client_config() -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let tls = builder(provider)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(KeyCheck {
            pin: None,
            algorithms,
        }))
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

fn root_store(config: &AgentConfig) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(
        added,
        ignored,
        errors = native.errors.len(),
        "system certificate store loaded"
    );
    if let Some(path) = &config.ca_file {
        let shown = path.display().to_string();
        let ca_error = |reason: String| ConfigError::CaFile {
            path: shown.clone(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_error(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no PEM certificate in the file".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ca_error(format!("unusable certificate: {e}")))?;
        }
    }
    Ok(roots)
}

/// SHA-256 of the SubjectPublicKeyInfo of a DER certificate.
pub(crate) fn spki_sha256(cert: &[u8]) -> Option<[u8; 32]> {
    let spki = subject_public_key_info(cert)?;
    Some(Sha256::digest(spki).into())
}

/// The DER SubjectPublicKeyInfo (tag and length included) of an X.509 certificate.
fn subject_public_key_info(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    let certificate = Der::parse(cert).filter(|d| d.tag == SEQUENCE)?;
    let tbs = Der::parse(certificate.contents).filter(|d| d.tag == SEQUENCE)?;
    let mut rest = tbs.contents;
    let first = Der::parse(rest)?;
    if first.tag == VERSION {
        rest = first.rest;
    }
    // serialNumber, signature, issuer, validity, subject
    for _ in 0..5 {
        rest = Der::parse(rest)?.rest;
    }
    let spki = Der::parse(rest).filter(|d| d.tag == SEQUENCE)?;
    Some(spki.whole)
}

/// One DER element.
struct Der<'a> {
    tag: u8,
    contents: &'a [u8],
    /// Tag, length and contents.
    whole: &'a [u8],
    /// What follows the element.
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn parse(input: &'a [u8]) -> Option<Der<'a>> {
        let (&tag, after_tag) = input.split_first()?;
        let (&first, after_len) = after_tag.split_first()?;
        let (len, body) = if first < 0x80 {
            (usize::from(first), after_len)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let (len_bytes, body) = after_len.split_at_checked(n)?;
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, body)
        };
        let (contents, rest) = body.split_at_checked(len)?;
        let header = input.len() - body.len();
        Some(Der {
            tag,
            contents,
            whole: input.get(..header + len)?,
            rest,
        })
    }
}

/// The pinned relay key did not match.
struct PinMismatch {
    got: Option<[u8; 32]>,
}

// rustls shows the source of a certificate error with `Debug`: make that the readable text.
impl fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.got {
            Some(got) => write!(
                f,
                "the relay's public key (sha256 {}) does not match --relay-pin",
                hex::encode(got)
            ),
            None => f.write_str("the relay's certificate cannot be parsed to check --relay-pin"),
        }
    }
}

impl std::error::Error for PinMismatch {}

/// A verifier that skips the certificate chain: with a pin, the end-entity key must have the
/// pinned SHA-256; without one, any certificate is accepted. Either way the handshake
/// signature must be made with the certificate's key.
#[derive(Debug)]
struct KeyCheck {
    pin: Option<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for KeyCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let got = spki_sha256(end_entity);
        if got == Some(pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch { got }))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
