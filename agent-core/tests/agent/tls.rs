//! wss with a test CA, relay pins, and TLS towards service targets (SNI).

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use agent_core::agent::{AgentEvent, RunOutcome};
use agent_core::document::ServiceInfo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PublicKeyData,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};

use crate::support::{AgentRun, FakeRelay, config, tunnel_with};

/// A CA and a certificate for `localhost` / 127.0.0.1 that it signed.
struct TestPki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    /// SHA-256 of the server key's SubjectPublicKeyInfo.
    pin: [u8; 32],
}

fn test_pki() -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tether test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    TestPki {
        ca_pem: ca.pem(),
        cert: cert.der().clone(),
        pin: Sha256::digest(key.subject_public_key_info()).into(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

fn server_config(pki: &TestPki) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
            .unwrap(),
    )
}

async fn wss_relay(pki: &TestPki) -> FakeRelay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    FakeRelay::serve(listener, Some(TlsAcceptor::from(server_config(pki))))
}

#[tokio::test]
async fn wss_with_a_ca_file_connects_and_without_it_is_refused_and_retried() {
    let pki = test_pki();
    let mut relay = wss_relay(&pki).await;

    let mut agent = AgentRun::start(config(relay.url("wss", "localhost")));
    agent
        .event("an untrusted certificate refused", |e| {
            matches!(e, AgentEvent::AttemptFailed { attempt: 2, error, .. } if error.contains("tls"))
        })
        .await;
    assert_eq!(agent.stop().await, RunOutcome::Shutdown);

    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(pki.ca_pem.as_bytes()).unwrap();
    let mut cfg = config(relay.url("wss", "localhost"));
    cfg.ca_file = Some(ca_file.path().to_owned());
    let _agent = AgentRun::start(cfg);
    relay.conn().await.manifest().await;
}

#[tokio::test]
async fn a_matching_relay_pin_replaces_chain_verification_and_a_wrong_one_is_retried() {
    let pki = test_pki();
    let mut relay = wss_relay(&pki).await;

    let mut cfg = config(relay.url("wss", "127.0.0.1"));
    cfg.relay_pin = Some([0x5a; 32]);
    let mut agent = AgentRun::start(cfg);
    for attempt in 1..=2 {
        agent
            .event("a pin mismatch", |e| {
                matches!(e, AgentEvent::AttemptFailed { attempt: a, error, .. }
                    if *a == attempt && error.contains("does not match --relay-pin"))
            })
            .await;
    }
    assert!(!agent.is_finished(), "a pin mismatch is not fatal");
    assert_eq!(agent.stop().await, RunOutcome::Shutdown);

    let mut cfg = config(relay.url("wss", "127.0.0.1"));
    cfg.relay_pin = Some(pki.pin);
    let _agent = AgentRun::start(cfg);
    relay.conn().await.manifest().await;
}

/// A TLS target that reports the SNI it got and answers like the half-close target.
async fn tls_target(pki: &TestPki) -> (SocketAddr, mpsc::UnboundedReceiver<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = server_config(pki);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let config = config.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
                let Ok(start) = acceptor.await else { return };
                let sni = start.client_hello().server_name().map(str::to_owned);
                let _ = tx.send(sni);
                let Ok(mut tls) = start.into_stream(config).await else {
                    return;
                };
                let mut got = Vec::new();
                if tls.read_to_end(&mut got).await.is_err() {
                    return;
                }
                let mut answer = format!("got {}: ", got.len()).into_bytes();
                answer.extend_from_slice(&got);
                let _ = tls.write_all(&answer).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn tls_targets_get_the_service_host_as_sni() {
    let pki = test_pki();
    let (target, mut sni) = tls_target(&pki).await;
    let port = target.port();
    let tls_service = |target: String, host: &str| ServiceInfo {
        target,
        host: host.to_owned(),
        tls: true,
        ..ServiceInfo::default()
    };
    let (_relay, _agent, conn) = tunnel_with(vec![
        (
            "vhost",
            tls_service(format!("127.0.0.1:{port}"), "app.example.test"),
        ),
        ("named", tls_service(format!("localhost:{port}"), "")),
        ("bare", tls_service(format!("127.0.0.1:{port}"), "")),
    ])
    .await;

    for (service, expected) in [
        ("vhost", Some("app.example.test")),
        ("named", Some("localhost")),
        ("bare", None),
    ] {
        let answer = conn.connect_roundtrip(service, b"over tls").await;
        assert_eq!(answer, b"OK\ngot 8: over tls", "{service}");
        assert_eq!(sni.recv().await.unwrap().as_deref(), expected, "{service}");
    }
}
