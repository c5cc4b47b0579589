//! PSK -> deterministic cluster CA, and leaf issuance under it.

use std::fmt;
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519, SanType, SerialNumber,
};
use ring::{digest, hkdf};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::error::TransportError;

/// The shortest runtime PSK accepted, in bytes.
pub const MIN_PSK_LEN: usize = 32;

/// The trust domain named in every leaf certificate's URI SAN.
pub const TRUST_DOMAIN: &str = "francis";

// Changing any of these changes every derived CA: bump the version in all of them together.
const HKDF_SALT: &[u8] = b"francis/cluster-ca/v1/salt";
const HKDF_INFO: &[u8] = b"francis/cluster-ca/v1/ed25519-seed";
/// PKCS#8 v1 prefix of an Ed25519 private key; the 32-byte seed follows it.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const CA_SERIAL: u8 = 1;
const CA_VALID_FROM: (i32, u8, u8) = (2025, 1, 1);
const CA_VALID_UNTIL: (i32, u8, u8) = (2125, 1, 1);

/// The URI SAN that names `host_id` in a leaf certificate: `spiffe://francis/host/<host_id>`.
pub fn host_uri(host_id: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/host/{host_id}")
}

/// The host id named by a leaf certificate's URI SAN, if it is one of ours.
pub(crate) fn host_id_from_uri(uri: &str) -> Option<&str> {
    uri.strip_prefix("spiffe://")?
        .strip_prefix(TRUST_DOMAIN)?
        .strip_prefix("/host/")
        .filter(|id| !id.is_empty())
}

/// A cluster CA derived from one runtime PSK.
///
/// Every host that derives it from the same PSK gets the byte-identical certificate (same key,
/// fields, validity window and serial), so no CA file is ever distributed. Its private key only
/// ever signs this host's own leaf certificates.
pub struct ClusterCa {
    fingerprint: String,
    der: CertificateDer<'static>,
    pem: String,
    params: CertificateParams,
    key: KeyPair,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Derives the cluster CA of `psk`: HKDF-SHA256 (fixed, versioned salt and info) gives an
/// Ed25519 seed, which signs a self-signed CA certificate whose every field is fixed.
///
/// Deterministic: the same PSK always gives the byte-identical certificate; different PSKs give
/// different keys. PSKs shorter than [`MIN_PSK_LEN`] bytes are refused with
/// [`TransportError::PskTooShort`].
pub fn derive_ca(psk: &[u8]) -> Result<ClusterCa, TransportError> {
    if psk.len() < MIN_PSK_LEN {
        return Err(TransportError::PskTooShort {
            len: psk.len(),
            min: MIN_PSK_LEN,
        });
    }
    let mut seed = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT)
        .extract(psk)
        .expand(&[HKDF_INFO], OutputLen(32))
        .and_then(|okm| okm.fill(&mut seed))
        .map_err(|_| TransportError::Certificate("HKDF expansion failed".into()))?;
    let mut pkcs8 = Vec::with_capacity(48);
    pkcs8.extend_from_slice(&ED25519_PKCS8_PREFIX);
    pkcs8.extend_from_slice(&seed);
    let key =
        KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), &PKCS_ED25519)
            .map_err(cert_error("load the derived CA key"))?;

    let fingerprint = fingerprint(key.public_key_raw());
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Francis");
    dn.push(
        DnType::CommonName,
        format!("Francis cluster CA {fingerprint}"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from_slice(&[CA_SERIAL]));
    let (y, m, d) = CA_VALID_FROM;
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = CA_VALID_UNTIL;
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = params
        .self_signed(&key)
        .map_err(cert_error("sign the cluster CA"))?;
    Ok(ClusterCa {
        fingerprint,
        der: cert.der().clone(),
        pem: cert.pem(),
        params,
        key,
    })
}

impl ClusterCa {
    /// The CA certificate in PEM, for operators to pin or inspect.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate in DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// A short public fingerprint of the CA key (16 hex digits), also found in the CA's common
    /// name; it tells apart certificates of different PSKs in logs without revealing the PSK.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub(crate) fn cert_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// Issues a leaf certificate for `host_id` with a fresh Ed25519 key pair: URI SAN
    /// [`host_uri`], server and client authentication, valid from a little before `now` until
    /// `not_after`. Returns the certificate and the PKCS#8 private key, both DER.
    pub(crate) fn issue_leaf(
        &self,
        host_id: &str,
        now: SystemTime,
        not_after: SystemTime,
    ) -> Result<(CertificateDer<'static>, Vec<u8>), TransportError> {
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(cert_error("generate a key"))?;
        self.sign_leaf(&key, host_id, now, not_after)
            .map(|cert| (cert, key.serialize_der()))
    }

    fn sign_leaf(
        &self,
        key: &KeyPair,
        host_id: &str,
        now: SystemTime,
        not_after: SystemTime,
    ) -> Result<CertificateDer<'static>, TransportError> {
        let uri = host_uri(host_id);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Francis");
        dn.push(DnType::CommonName, format!("Francis host {host_id}"));
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            uri.try_into().map_err(cert_error("encode the URI SAN"))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| TransportError::Certificate("no randomness for a serial".into()))?;
        serial[0] &= 0x7f; // keep the DER integer positive
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        // Tolerate small clock differences between hosts.
        params.not_before = now
            .checked_sub(LEAF_BACKDATE)
            .unwrap_or(SystemTime::UNIX_EPOCH)
            .into();
        params.not_after = not_after.into();
        let issuer = Issuer::from_params(&self.params, &self.key);
        params
            .signed_by(key, &issuer)
            .map(|cert| cert.der().clone())
            .map_err(cert_error("sign a leaf certificate"))
    }
}

/// How far back a leaf's `not_before` is set, for peers whose clock is slightly behind.
pub(crate) const LEAF_BACKDATE: std::time::Duration = std::time::Duration::from_secs(300);

/// Secrets of the QUIC endpoint bound at `addr`, derived from the first PSK: the key that signs
/// stateless-reset tokens and the key that signs connection ids. A host that restarts on the
/// same address after a crash recognises its predecessor's connection ids and resets its
/// peers' stale connections at their next packet, instead of leaving them to time out.
pub(crate) fn endpoint_secrets(psk: &[u8], addr: std::net::SocketAddr) -> (ring::hmac::Key, u64) {
    let info = format!("francis/quic-endpoint/v1/{addr}");
    let mut secret = [0u8; 40];
    let filled = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT)
        .extract(psk)
        .expand(&[info.as_bytes()], OutputLen(40))
        .and_then(|okm| okm.fill(&mut secret));
    if filled.is_err() {
        // Cannot happen for 40 bytes; random secrets would only lose the fast reset.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret);
    }
    let (reset, cid) = secret.split_at(32);
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(cid);
    (
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset),
        u64::from_le_bytes(cid_key),
    )
}

fn fingerprint(public_key: &[u8]) -> String {
    digest::digest(&digest::SHA256, public_key).as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn cert_error(what: &'static str) -> impl Fn(rcgen::Error) -> TransportError {
    move |e| TransportError::Certificate(format!("cannot {what}: {e}"))
}

struct OutputLen(usize);

impl hkdf::KeyType for OutputLen {
    fn len(&self) -> usize {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    const PSK_A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const PSK_B: &[u8] = b"0123456789abcdef0123456789abcdeX";

    #[test]
    fn derivation_is_deterministic_and_per_psk() {
        let a1 = derive_ca(PSK_A).unwrap();
        let a2 = derive_ca(PSK_A).unwrap();
        let b = derive_ca(PSK_B).unwrap();
        assert_eq!(a1.pem(), a2.pem());
        assert_eq!(a1.der(), a2.der());
        assert_ne!(a1.der(), b.der());
        assert_ne!(a1.fingerprint(), b.fingerprint());
        assert_eq!(a1.fingerprint().len(), 16);
        assert!(a1.pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn short_psk_is_refused() {
        let err = derive_ca(&PSK_A[..31]).unwrap_err();
        assert!(matches!(
            err,
            TransportError::PskTooShort { len: 31, min: 32 }
        ));
        assert!(err.to_string().contains("at least 32"), "{err}");
        assert!(derive_ca(b"").is_err());
    }

    #[test]
    fn ca_fields_are_fixed() {
        let ca = derive_ca(PSK_A).unwrap();
        let (_, cert) = X509Certificate::from_der(ca.der()).unwrap();
        assert!(cert.is_ca());
        assert_eq!(cert.raw_serial(), &[CA_SERIAL]);
        assert_eq!(cert.subject(), cert.issuer());
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert!(cn.as_str().unwrap().contains(ca.fingerprint()));
        assert_eq!(cert.validity().not_before.to_datetime().year(), 2025);
        assert_eq!(cert.validity().not_after.to_datetime().year(), 2125);
    }

    #[test]
    fn leaf_has_host_uri_and_both_ekus() {
        let ca = derive_ca(PSK_A).unwrap();
        let now = SystemTime::now();
        let (der, key) = ca
            .issue_leaf("host-1", now, now + std::time::Duration::from_secs(3600))
            .unwrap();
        assert!(!key.is_empty());
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert!(!cert.is_ca());
        assert_eq!(
            cert.issuer(),
            X509Certificate::from_der(ca.der()).unwrap().1.subject()
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        let uris: Vec<_> = san
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect();
        assert_eq!(uris, vec!["spiffe://francis/host/host-1"]);
        assert_eq!(host_id_from_uri(uris[0]), Some("host-1"));
    }

    #[test]
    fn endpoint_secrets_are_per_psk_and_address() {
        let tag = |psk: &[u8], addr: &str| {
            let (key, cid_key) = endpoint_secrets(psk, addr.parse().unwrap());
            let mut tag = ring::hmac::sign(&key, b"connection id").as_ref().to_vec();
            tag.extend_from_slice(&cid_key.to_le_bytes());
            tag
        };
        assert_eq!(tag(PSK_A, "127.0.0.1:7000"), tag(PSK_A, "127.0.0.1:7000"));
        assert_ne!(tag(PSK_A, "127.0.0.1:7000"), tag(PSK_A, "127.0.0.1:7001"));
        assert_ne!(tag(PSK_A, "127.0.0.1:7000"), tag(PSK_B, "127.0.0.1:7000"));
    }

    #[test]
    fn host_uri_parsing_rejects_foreign_uris() {
        assert_eq!(host_id_from_uri(&host_uri("h")), Some("h"));
        assert_eq!(host_id_from_uri("spiffe://francis/host/"), None);
        assert_eq!(host_id_from_uri("spiffe://other/host/h"), None);
        assert_eq!(host_id_from_uri("https://francis/host/h"), None);
    }
}
