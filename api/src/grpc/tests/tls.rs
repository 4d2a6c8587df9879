//! TLS and mutual TLS from `[api.tls]`, with certificates made for the test.

use super::{Harness, TOKEN};
use crate::proto::{self, salve_client::SalveClient};
use crate::{ApiConfig, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::Path;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

/// A CA, a server certificate for localhost signed by it, and a client certificate.
fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("a CA");
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca)
            .expect("signed");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into()]);
    let (client_cert_pem, client_key_pem) = leaf(vec!["operator".into()]);
    let write = |name: &str, pem: &str| std::fs::write(dir.path().join(name), pem).expect("writes");
    write("server.crt", &server_cert);
    write("server.key", &server_key);
    write("ca.crt", &ca.pem());
    Pki {
        ca_pem: ca.pem(),
        client_cert_pem,
        client_key_pem,
        dir,
    }
}

fn tls_config(dir: &Path, mutual: bool) -> ApiConfig {
    ApiConfig {
        listen: "127.0.0.1:0".into(),
        token: TOKEN.into(),
        tls: Some(TlsConfig {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            client_ca: mutual.then(|| dir.join("ca.crt")),
        }),
        ..ApiConfig::default()
    }
}

async fn status_over_tls(
    harness: &Harness,
    pki: &Pki,
    with_client_cert: bool,
) -> Result<proto::EngineStatus, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if with_client_cert {
        tls = tls.identity(Identity::from_pem(
            &pki.client_cert_pem,
            &pki.client_key_pem,
        ));
    }
    let channel = Channel::from_shared(format!("https://{}", harness.addr))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    SalveClient::new(channel)
        .get_status(proto::GetStatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| format!("{status:?}"))
}

#[tokio::test]
async fn the_api_serves_over_tls_and_knows_a_loopback_peer_through_it() {
    let pki = pki();
    let harness = Harness::start(tls_config(pki.dir.path(), false)).await;
    // A query with no token: the peer behind TLS is still seen to be on loopback.
    let status = status_over_tls(&harness, &pki, false)
        .await
        .expect("a TLS client that trusts the CA");
    assert_eq!(status.rules_version, 1);
    let plaintext = harness
        .client()
        .await
        .get_status(proto::GetStatusRequest {})
        .await;
    assert!(plaintext.is_err(), "plaintext is not served");
    harness.stop().await;
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_a_certificate_get_in() {
    let pki = pki();
    let harness = Harness::start(tls_config(pki.dir.path(), true)).await;
    let refused = status_over_tls(&harness, &pki, false).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    status_over_tls(&harness, &pki, true)
        .await
        .expect("a client certificate signed by the CA");
    harness.stop().await;
}

#[tokio::test]
async fn a_key_that_is_not_pem_is_named() {
    let pki = pki();
    std::fs::write(pki.dir.path().join("server.key"), "not a key").expect("writes");
    let (control, _inbox) = salve_connectors::control_channel(None);
    let error = crate::grpc::bind(&tls_config(pki.dir.path(), false), control)
        .await
        .expect_err("a broken key");
    assert!(error.to_string().starts_with("api.tls.key:"), "{error}");
}
