//! This host's leaf certificates (one per configured PSK) and when to renew them.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca::ClusterCa;
use crate::error::TransportError;

/// When a leaf issued at `issued_at` and valid until `not_after` should be replaced: after two
/// thirds of its lifetime, so a renewal that fails has a third of the lifetime to be retried.
pub fn renew_at(issued_at: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after
        .duration_since(issued_at)
        .unwrap_or(Duration::ZERO);
    issued_at + lifetime * 2 / 3
}

/// Whether a leaf issued at `issued_at`, valid until `not_after`, is due for renewal at `now`.
pub fn should_renew(issued_at: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    now >= renew_at(issued_at, not_after)
}

/// The suffix of the TLS server name a client sends: `<fingerprint>.ca.francis` names the CA
/// the client prefers, so a server holding a leaf under that CA presents it.
const SNI_SUFFIX: &str = ".ca.francis";

/// The TLS server name announcing that the caller prefers certificates of `ca`.
pub(crate) fn server_name_for(ca: &ClusterCa) -> String {
    format!("{}{SNI_SUFFIX}", ca.fingerprint())
}

/// A leaf certificate under one cluster CA.
#[derive(Debug)]
pub(crate) struct Leaf {
    ca_fingerprint: String,
    /// The CA's subject, DER with its outer SEQUENCE: what a TLS server lists as acceptable CAs.
    ca_subject: Vec<u8>,
    certified: Arc<CertifiedKey>,
}

/// All leaves of this host, in the order of its PSKs (the first is the preferred one).
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) leaves: Vec<Leaf>,
    pub(crate) issued_at: SystemTime,
    pub(crate) not_after: SystemTime,
}

impl Identity {
    /// Issues one leaf per CA, each with a fresh key pair, valid from `now` for `lifetime`.
    pub(crate) fn issue(
        host_id: &str,
        cas: &[ClusterCa],
        provider: &CryptoProvider,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Self, TransportError> {
        let not_after = now + lifetime;
        let leaves = cas
            .iter()
            .map(|ca| {
                let (cert, key) = ca.issue_leaf(host_id, now, not_after)?;
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
                let certified = CertifiedKey::from_der(vec![cert], key, provider)
                    .map_err(|e| TransportError::Tls(format!("cannot load leaf key: {e}")))?;
                Ok(Leaf {
                    ca_fingerprint: ca.fingerprint().to_string(),
                    ca_subject: subject_der(ca.cert_der())?,
                    certified: Arc::new(certified),
                })
            })
            .collect::<Result<Vec<_>, TransportError>>()?;
        Ok(Identity {
            leaves,
            issued_at: now,
            not_after,
        })
    }

    /// The leaf to present as a server: the one under the CA the client named in its server
    /// name, else the preferred one.
    pub(crate) fn for_server_name(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let wanted = server_name.and_then(|n| n.strip_suffix(SNI_SUFFIX));
        self.leaves
            .iter()
            .find(|l| Some(l.ca_fingerprint.as_str()) == wanted)
            .unwrap_or(&self.leaves[0])
            .certified
            .clone()
    }

    /// The leaf to present as a client: the first (in PSK order) under a CA the server
    /// accepts, else the preferred one.
    pub(crate) fn for_ca_hints(&self, hints: &[&[u8]]) -> Arc<CertifiedKey> {
        self.leaves
            .iter()
            .find(|l| hints.contains(&l.ca_subject.as_slice()))
            .unwrap_or(&self.leaves[0])
            .certified
            .clone()
    }

    /// The preferred leaf's certificate.
    pub(crate) fn primary_der(&self) -> CertificateDer<'static> {
        self.leaves[0].certified.cert[0].clone()
    }
}

/// The current identity, swapped when the leaves are renewed; handshakes read it.
#[derive(Debug)]
pub(crate) struct IdentityCell(RwLock<Arc<Identity>>);

impl IdentityCell {
    pub(crate) fn new(identity: Identity) -> Self {
        Self(RwLock::new(Arc::new(identity)))
    }

    pub(crate) fn get(&self) -> Arc<Identity> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, identity: Identity) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(identity);
    }
}

fn subject_der(cert: &CertificateDer<'_>) -> Result<Vec<u8>, TransportError> {
    let (_, parsed) = X509Certificate::from_der(cert)
        .map_err(|e| TransportError::Certificate(format!("cannot parse the CA: {e}")))?;
    Ok(parsed.subject().as_raw().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::derive_ca;

    #[test]
    fn renewal_after_two_thirds() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = t0 + Duration::from_secs(300);
        assert_eq!(renew_at(t0, end), t0 + Duration::from_secs(200));
        assert!(!should_renew(t0, end, t0));
        assert!(!should_renew(t0, end, t0 + Duration::from_secs(199)));
        assert!(should_renew(t0, end, t0 + Duration::from_secs(200)));
        assert!(should_renew(t0, end, end + Duration::from_secs(1)));
        // A leaf whose end is before its issue time is renewed at once.
        assert!(should_renew(end, t0, end));
    }

    #[test]
    fn leaf_choice_follows_server_name_and_ca_hints() {
        let provider = rustls::crypto::ring::default_provider();
        let new = derive_ca(&[1; 32]).unwrap();
        let old = derive_ca(&[2; 32]).unwrap();
        let id = Identity::issue(
            "h",
            &[new, old],
            &provider,
            SystemTime::now(),
            Duration::from_secs(60),
        )
        .unwrap();
        let new_leaf = &id.leaves[0].certified;
        let old_leaf = &id.leaves[1].certified;
        let old_sni = format!("{}{SNI_SUFFIX}", id.leaves[1].ca_fingerprint);
        assert!(Arc::ptr_eq(&id.for_server_name(Some(&old_sni)), old_leaf));
        assert!(Arc::ptr_eq(
            &id.for_server_name(Some("x.ca.francis")),
            new_leaf
        ));
        assert!(Arc::ptr_eq(&id.for_server_name(None), new_leaf));
        let old_subject = id.leaves[1].ca_subject.clone();
        let new_subject = id.leaves[0].ca_subject.clone();
        assert!(Arc::ptr_eq(&id.for_ca_hints(&[&old_subject]), old_leaf));
        assert!(Arc::ptr_eq(
            &id.for_ca_hints(&[&old_subject, &new_subject]),
            new_leaf
        ));
        assert!(Arc::ptr_eq(&id.for_ca_hints(&[]), new_leaf));
        assert_ne!(new_leaf.cert[0], old_leaf.cert[0]);
    }
}
