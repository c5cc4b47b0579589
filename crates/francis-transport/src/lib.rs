//! How Francis hosts reach each other: QUIC with mutual TLS whose trust is derived from a shared
//! runtime PSK, carrying length-delimited protobuf requests and responses.
//!
//! The entry type is [`Transport`]: one QUIC endpoint per host that serves peers (answering with
//! a [`RequestHandler`]) and calls them ([`Transport::request`], [`Transport::invoke`]) over one
//! pooled connection per peer, one bidirectional stream per request.
//!
//! Trust needs no CA file: [`derive_ca`] turns every runtime PSK into a byte-identical
//! self-signed CA on every host. Each host issues itself a short-lived leaf certificate naming
//! its host id (`spiffe://francis/host/<host_id>`), signed by the CA of its first PSK; peers
//! are trusted when their certificate chains to the CA of *any* configured PSK, which is how
//! PSKs are rotated without downtime (see `docs/transport.md`).
//!
//! ```no_run
//! use std::sync::Arc;
//! use francis_transport::{async_trait, proto, RequestHandler, Transport, TransportConfig};
//!
//! #[derive(Debug)]
//! struct Echo;
//!
//! #[async_trait]
//! impl RequestHandler for Echo {
//!     async fn handle(&self, _peer_host_id: &str, request: proto::Request) -> proto::Response {
//!         match request.body {
//!             Some(proto::request::Body::Invoke(invoke)) => {
//!                 proto::Response::invoke_ok(Some(invoke.payload))
//!             }
//!             _ => proto::Response::unsupported(),
//!         }
//!     }
//! }
//!
//! # async fn demo() -> Result<(), francis_transport::TransportError> {
//! let psk = b"example-runtime-psk-change-me-please".to_vec();
//! let a = Transport::start(
//!     TransportConfig::new("host-a", "127.0.0.1:0".parse().unwrap(), vec![psk.clone()]),
//!     Arc::new(Echo),
//! )?;
//! let b = Transport::start(
//!     TransportConfig::new("host-b", "127.0.0.1:0".parse().unwrap(), vec![psk]),
//!     Arc::new(Echo),
//! )?;
//! let reply = b
//!     .invoke(a.local_addr(), "host-a", proto::Invoke {
//!         actor_type: "counter".into(),
//!         actor_id: "c1".into(),
//!         method: "get".into(),
//!         payload: "null".into(),
//!         request_id: "r1".into(),
//!         read_only: true,
//!         ..Default::default()
//!     })
//!     .await;
//! assert!(reply.is_ok());
//! b.shutdown().await;
//! a.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod ca;
mod config;
mod endpoint;
mod error;
mod frame;
mod identity;
mod pool;
pub mod proto;
mod server;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
mod wire;

pub use async_trait::async_trait;
pub use ca::{ClusterCa, MIN_PSK_LEN, TRUST_DOMAIN, derive_ca, host_uri};
pub use config::{DEFAULT_MAX_MESSAGE_SIZE, Limits, TransportConfig, validate_host_id};
pub use endpoint::{RequestHandler, Transport, TransportStats};
pub use error::TransportError;
pub use frame::{Decoded, FrameHeader, decode_frame, decode_message, encode_frame, frame_header};
pub use identity::{renew_at, should_renew};
pub use tls::ALPN;
