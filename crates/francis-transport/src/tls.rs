//! rustls configuration: TLS 1.3 only, ALPN `francis/1`, leaves chosen per peer, and peer
//! chains checked against the CAs of every configured PSK in both directions.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::ca::{ClusterCa, host_id_from_uri};
use crate::config::Limits;
use crate::error::TransportError;
use crate::identity::IdentityCell;

/// The ALPN protocol both sides must offer.
pub const ALPN: &[u8] = b"francis/1";

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trust roots: the CA of every configured PSK.
pub(crate) fn roots(cas: &[ClusterCa]) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca.cert_der().clone()).map_err(|e| {
            TransportError::Tls(format!("cannot trust CA {}: {e}", ca.fingerprint()))
        })?;
    }
    Ok(Arc::new(roots))
}

fn tls_error(what: &'static str) -> impl Fn(rustls::Error) -> TransportError {
    move |e| TransportError::Tls(format!("{what}: {e}"))
}

/// The server side: presents the leaf the client asked for, requires a client certificate
/// chained to one of `roots`.
pub(crate) fn server_config(
    roots: Arc<RootCertStore>,
    identity: Arc<IdentityCell>,
    provider: Arc<CryptoProvider>,
    limits: &Limits,
) -> Result<quinn::ServerConfig, TransportError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TransportError::Tls(format!("client verifier: {e}")))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error("server protocol versions"))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(ServerResolver(identity)));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // No session resumption: every connection presents and checks a full certificate, so a
    // renewed or renamed leaf (and a removed PSK) takes effect on the next connection.
    tls.send_tls13_tickets = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TransportError::Tls(format!("QUIC server config: {e}")))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport_config(limits)?);
    Ok(config)
}

/// The client side: checks the server's chain against `roots` (not its name: the host id is
/// checked after the handshake) and presents the leaf the server accepts.
pub(crate) fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<Arc<dyn ResolvesClientCert>>,
    provider: Arc<CryptoProvider>,
    limits: &Limits,
) -> Result<quinn::ClientConfig, TransportError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error("client protocol versions"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainVerifier { roots, provider }));
    let mut tls = match identity {
        Some(resolver) => builder.with_client_cert_resolver(resolver),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TransportError::Tls(format!("QUIC client config: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport_config(limits)?);
    Ok(config)
}

pub(crate) fn client_resolver(identity: Arc<IdentityCell>) -> Arc<dyn ResolvesClientCert> {
    Arc::new(ClientResolver(identity))
}

fn transport_config(limits: &Limits) -> Result<Arc<quinn::TransportConfig>, TransportError> {
    let mut t = quinn::TransportConfig::default();
    // Twice the in-flight limit, so the excess reaches the server and gets a prompt
    // "overloaded" instead of waiting for stream credit.
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(
        limits.max_in_flight_per_connection.saturating_mul(2),
    ));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(limits.idle_timeout)
            .map_err(|_| TransportError::InvalidConfig("idle_timeout is too long".into()))?,
    ));
    t.keep_alive_interval(Some(limits.keep_alive_interval));
    Ok(Arc::new(t))
}

#[derive(Debug)]
struct ServerResolver(Arc<IdentityCell>);

impl ResolvesServerCert for ServerResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get().for_server_name(hello.server_name()))
    }
}

#[derive(Debug)]
struct ClientResolver(Arc<IdentityCell>);

impl ResolvesClientCert for ClientResolver {
    fn resolve(&self, hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get().for_ca_hints(hints))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies a server's chain against the cluster CAs, ignoring the server name (peers are
/// addressed by IP; their host id is checked on the established connection).
#[derive(Debug)]
struct ChainVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is enabled.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The host id in the URI SAN of a leaf certificate.
pub(crate) fn host_id_of_cert(der: &[u8]) -> Result<String, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("unparsable certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subject alternative names: {e}"))?
        .ok_or("certificate has no subject alternative name")?;
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            GeneralName::URI(uri) => host_id_from_uri(uri),
            _ => None,
        })
        .map(str::to_string)
        .ok_or_else(|| "certificate names no Francis host".to_string())
}

/// The host id of the authenticated peer of `conn`.
pub(crate) fn peer_host_id(conn: &quinn::Connection) -> Result<String, String> {
    let identity = conn
        .peer_identity()
        .ok_or("peer presented no certificate")?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "peer identity is not a certificate chain")?;
    let leaf = chain.first().ok_or("peer presented an empty chain")?;
    host_id_of_cert(leaf)
}
