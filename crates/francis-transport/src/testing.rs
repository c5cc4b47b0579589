//! Helpers for tests that must misbehave: raw QUIC clients with a chosen certificate (or none)
//! and chosen trust roots. Only with the `testing` feature; never use it in production.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::ca::ClusterCa;
use crate::config::Limits;
use crate::error::TransportError;
use crate::tls;

/// A quinn client configuration presenting a leaf for `host_id` signed by `identity` (or no
/// certificate at all when `None`), and trusting servers chained to `trusted`.
pub fn raw_client_config(
    identity: Option<(&ClusterCa, &str)>,
    trusted: &[ClusterCa],
) -> Result<quinn::ClientConfig, TransportError> {
    let provider = tls::provider();
    let resolver = match identity {
        Some((ca, host_id)) => {
            let now = SystemTime::now();
            let (cert, key) = ca.issue_leaf(host_id, now, now + Duration::from_secs(3600))?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
            let certified = CertifiedKey::from_der(vec![cert], key, &provider)
                .map_err(|e| TransportError::Tls(e.to_string()))?;
            Some(Arc::new(Fixed(Arc::new(certified))) as Arc<dyn ResolvesClientCert>)
        }
        None => None,
    };
    tls::client_config(tls::roots(trusted)?, resolver, provider, &Limits::default())
}

/// The TLS server name a host whose first PSK has CA `ca` sends.
pub fn server_name(ca: &ClusterCa) -> String {
    crate::identity::server_name_for(ca)
}

/// The host id named by a leaf certificate (DER), as a peer would read it.
pub fn host_id_of_cert(der: &[u8]) -> Result<String, String> {
    tls::host_id_of_cert(der)
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
