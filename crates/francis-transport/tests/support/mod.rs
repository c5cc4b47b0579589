//! Shared pieces of the transport tests: PSKs, a scriptable handler, hosts on loopback.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use francis_core::{ActorRef, Error};
use francis_transport::proto::{Invoke, Request, Response, request};
use francis_transport::{Limits, RequestHandler, Transport, TransportConfig, async_trait};
use tokio::sync::Semaphore;

pub const PSK_OLD: &[u8] = b"old-runtime-psk-0123456789abcdef-0123456789";
pub const PSK_NEW: &[u8] = b"new-runtime-psk-fedcba9876543210-fedcba9876";

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A handler whose behaviour is chosen by the invoked method:
/// `echo` (payload back), `whoami` (the peer's host id), `fail` (actor not hosted),
/// `block` (waits for a permit of `gate`), `big` (a reply of `payload` bytes as a decimal).
#[derive(Debug)]
pub struct TestHandler {
    pub gate: Semaphore,
    pub entered: AtomicUsize,
    pub completed: AtomicUsize,
    pub dropped: AtomicUsize,
}

impl TestHandler {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            gate: Semaphore::new(0),
            entered: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        })
    }

    pub fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }

    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// Counts a handler future dropped before it finished.
struct DropCounter<'a> {
    handler: &'a TestHandler,
    finished: bool,
}

impl Drop for DropCounter<'_> {
    fn drop(&mut self) {
        let counter = if self.finished {
            &self.handler.completed
        } else {
            &self.handler.dropped
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl RequestHandler for TestHandler {
    async fn handle(&self, peer_host_id: &str, request: Request) -> Response {
        let Some(request::Body::Invoke(invoke)) = request.body else {
            return Response::unsupported();
        };
        match invoke.method.as_str() {
            "echo" => Response::invoke_ok(Some(invoke.payload)),
            "whoami" => Response::invoke_ok(Some(Bytes::from(peer_host_id.to_string()))),
            "fail" => Response::invoke_error(&Error::ActorNotHosted(
                ActorRef::new(invoke.actor_type, invoke.actor_id).unwrap(),
            )),
            "block" => {
                self.entered.fetch_add(1, Ordering::SeqCst);
                let mut counter = DropCounter {
                    handler: self,
                    finished: false,
                };
                self.gate.acquire().await.unwrap().forget();
                counter.finished = true;
                Response::invoke_ok(Some(invoke.payload))
            }
            "big" => {
                let n: usize = std::str::from_utf8(&invoke.payload)
                    .unwrap()
                    .parse()
                    .unwrap();
                Response::invoke_ok(Some(Bytes::from(vec![b'x'; n])))
            }
            other => Response::invoke_error(&Error::actor(format!("no method {other}"))),
        }
    }
}

pub fn config(host_id: &str, psks: &[&[u8]]) -> TransportConfig {
    TransportConfig::new(
        host_id,
        loopback(),
        psks.iter().map(|p| p.to_vec()).collect(),
    )
}

pub fn start(host_id: &str, psks: &[&[u8]]) -> (Transport, Arc<TestHandler>) {
    start_with(config(host_id, psks))
}

pub fn start_with(config: TransportConfig) -> (Transport, Arc<TestHandler>) {
    let handler = TestHandler::new();
    let transport = Transport::start(config, handler.clone()).expect("transport starts");
    (transport, handler)
}

pub fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut limits = Limits::default();
    f(&mut limits);
    limits
}

pub fn invoke(method: &str, payload: impl Into<Bytes>) -> Invoke {
    Invoke {
        actor_type: "test".into(),
        actor_id: "a1".into(),
        method: method.into(),
        payload: payload.into(),
        request_id: "req-1".into(),
        read_only: false,
        ..Default::default()
    }
}

pub fn invoke_request(method: &str, payload: impl Into<Bytes>) -> Request {
    Request {
        body: Some(request::Body::Invoke(invoke(method, payload))),
    }
}

/// Polls `cond` until it holds, failing the test after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
