//! The malformed-input pass: bad HTTP requests to the control API, raw garbage on its TCP port
//! and random datagrams on every worker's peer (QUIC) port, against a healthy three-worker
//! cluster. Every bad request must get a `4xx` with a JSON `{error, code}` body (or a documented
//! retryable `503`/`504`); no worker may crash; and the cluster must still serve calls after.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use http::Method;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::info;

use crate::checker::ALLOWED_CODES;
use crate::client::{self, Http};
use crate::cluster::Cluster;
use crate::history::{Kind, Op, Outcome, Violation};

/// One bad request.
#[derive(Debug, Clone)]
pub struct BadRequest {
    /// What kind of bad it is (for the report).
    pub family: &'static str,
    /// The HTTP method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// The body.
    pub body: Bytes,
}

/// What the pass found.
#[derive(Debug, Default, Serialize)]
pub struct MalformedResult {
    /// Requests sent.
    pub requests: u64,
    /// Answers by status.
    pub by_status: BTreeMap<u16, u64>,
    /// Raw TCP garbage connections.
    pub raw_connections: u64,
    /// UDP datagrams sent to peer ports.
    pub datagrams: u64,
    /// Violations.
    pub violations: Vec<Violation>,
}

const ID_CHARS: &[u8] = b"abcXYZ019-_.~!$&'()*+,;=:@%/?#[] \t\"<>\\^`{|}";

fn random_bytes(rng: &mut StdRng, len: std::ops::Range<usize>) -> Vec<u8> {
    let mut v = vec![0; rng.random_range(len)];
    rng.fill_bytes(&mut v);
    v
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// A random path segment: printable junk percent-encoded, raw bytes, or empty.
fn junk_segment(rng: &mut StdRng) -> String {
    match rng.random_range(0..5) {
        0 => String::new(),
        1 => percent_encode(&random_bytes(rng, 1..40)),
        2 => "x".repeat(rng.random_range(257..600)),
        3 => {
            let n = rng.random_range(1..30);
            let raw: Vec<u8> = (0..n)
                .map(|_| ID_CHARS[rng.random_range(0..ID_CHARS.len())])
                .collect();
            percent_encode(&raw)
        }
        _ => "francis.builtin.x".to_owned(),
    }
}

/// `n` bad requests drawn from `seed`: every family appears, then random picks.
pub fn bad_requests(seed: u64, n: usize) -> Vec<BadRequest> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let fixed: Vec<(&'static str, Method, String, Bytes)> = vec![
        (
            "huge_body",
            Method::POST,
            "/invoke/myactor/m1/increment".into(),
            Bytes::from(vec![b' '; 17 * 1024 * 1024]),
        ),
        (
            "big_garbage",
            Method::POST,
            "/invoke/myactor/m1/increment".into(),
            Bytes::from(vec![b'{'; 2 * 1024 * 1024]),
        ),
        (
            "deep_json",
            Method::POST,
            "/invoke/myactor/m1/increment".into(),
            Bytes::from(format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000))),
        ),
        (
            "bad_path",
            Method::POST,
            "/invoke/myactor".into(),
            Bytes::new(),
        ),
        (
            "bad_path",
            Method::POST,
            "/invoke//m1/increment".into(),
            Bytes::new(),
        ),
        (
            "bad_path",
            Method::POST,
            "/invoke/myactor/%FF%FE/increment".into(),
            Bytes::new(),
        ),
        (
            "bad_path",
            Method::POST,
            "/invoke/myactor/m1/increment/extra".into(),
            Bytes::new(),
        ),
        (
            "bad_path",
            Method::GET,
            "/../../etc/passwd".into(),
            Bytes::new(),
        ),
        (
            "reserved",
            Method::POST,
            "/invoke/francis.builtin.t/m1/increment".into(),
            Bytes::new(),
        ),
        (
            "reserved",
            Method::POST,
            "/invoke/myactor/m1/francis.builtin.m".into(),
            Bytes::new(),
        ),
        (
            "unknown_type",
            Method::POST,
            "/invoke/nosuchtype/m1/increment".into(),
            Bytes::new(),
        ),
        (
            "unknown_method",
            Method::POST,
            "/invoke/myactor/m1/nosuchmethod".into(),
            Bytes::new(),
        ),
        (
            "read_only",
            Method::POST,
            "/peek/myactor/m1/increment".into(),
            Bytes::from_static(br#"{"In": 1}"#),
        ),
        (
            "overflow",
            Method::POST,
            "/invoke/myactor/m1/increment".into(),
            Bytes::from_static(br#"{"In": 99999999999999999999}"#),
        ),
        (
            "bad_method",
            Method::GET,
            "/invoke/myactor/m1/increment".into(),
            Bytes::new(),
        ),
        (
            "bad_method",
            Method::PUT,
            "/alarm/myactor/m1/a".into(),
            Bytes::new(),
        ),
        ("bad_method", Method::POST, "/healthz".into(), Bytes::new()),
        (
            "bad_method",
            Method::PATCH,
            "/state/myactor/m1".into(),
            Bytes::new(),
        ),
        (
            "bad_alarm",
            Method::POST,
            "/alarm/myactor/m1/a".into(),
            Bytes::from_static(br#"{"dueTime": "tomorrow-ish"}"#),
        ),
        (
            "bad_alarm",
            Method::POST,
            "/alarm/myactor/m1/a".into(),
            Bytes::from_static(br#"{"interval": "-5s"}"#),
        ),
        (
            "bad_alarm",
            Method::POST,
            "/alarm/myactor/m1/a".into(),
            Bytes::from_static(br#"{"period": 12, "ttl": []}"#),
        ),
        (
            "bad_alarm",
            Method::POST,
            format!("/alarm/myactor/m1/{}", "n".repeat(300)),
            Bytes::new(),
        ),
    ];
    for (family, method, path, body) in fixed {
        out.push(BadRequest {
            family,
            method,
            path,
            body,
        });
    }
    let bodies: [&[u8]; 12] = [
        b"{",
        b"{\"In\": \"one\"}",
        b"{\"In\": 1.5}",
        b"[]",
        b"null",
        b"\"In\"",
        b"{\"In\": null}",
        b"{\"In\": 1} trailing",
        b"\xff\xfe\xfd",
        b"{\"In\": 1, \"In\": 2",
        b"{\"Out\": 1}",
        b"true",
    ];
    let methods = [
        Method::GET,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::HEAD,
    ];
    while out.len() < n {
        let r = match rng.random_range(0..6) {
            0 => BadRequest {
                family: "bad_json",
                method: Method::POST,
                path: "/invoke/myactor/m2/increment".into(),
                body: Bytes::from_static(bodies[rng.random_range(0..bodies.len())]),
            },
            1 => BadRequest {
                family: "random_body",
                method: Method::POST,
                path: format!(
                    "/{}/myactor/m3/{}",
                    ["invoke", "peek"][rng.random_range(0..2)],
                    ["increment", "reset", "peek"][rng.random_range(0..3)]
                ),
                body: Bytes::from(random_bytes(&mut rng, 1..4096)),
            },
            2 => BadRequest {
                family: "bad_actor_id",
                method: Method::POST,
                path: format!("/invoke/myactor/{}/increment", junk_segment(&mut rng)),
                body: Bytes::from_static(br#"{"In": 1}"#),
            },
            3 => BadRequest {
                family: "bad_path",
                method: Method::POST,
                path: format!(
                    "/{}/{}/{}",
                    junk_segment(&mut rng),
                    junk_segment(&mut rng),
                    junk_segment(&mut rng)
                ),
                body: Bytes::new(),
            },
            4 => BadRequest {
                family: "bad_method",
                method: methods[rng.random_range(0..methods.len())].clone(),
                path: [
                    "/invoke/myactor/m4/increment",
                    "/peek/myactor/m4/peek",
                    "/halt/myactor/m4",
                    "/halt-all",
                ][rng.random_range(0..4)]
                .into(),
                body: Bytes::new(),
            },
            _ => BadRequest {
                family: "bad_alarm",
                method: Method::POST,
                path: format!(
                    "/alarm/myactor/{}/{}",
                    ["m5", ""][rng.random_range(0..2)],
                    junk_segment(&mut rng)
                ),
                body: Bytes::from(
                    [
                        &br#"{"dueTime": 5}"#[..],
                        br#"{"interval": "PT"}"#,
                        br#"{"interval": "1000000000000h"}"#,
                        b"{",
                        br#"{"ttl": "never"}"#,
                    ][rng.random_range(0..5)]
                    .to_vec(),
                ),
            },
        };
        out.push(r);
    }
    out
}

/// Whether an answer to a bad request is acceptable: a `2xx` (a request that turned out valid),
/// a `4xx` with `{error, code}` (`HEAD` has no body), or a `503` (with `Retry-After`) or `504`
/// with a retryable code.
pub fn acceptable(method: &Method, reply: &client::Reply) -> bool {
    let has_error_body = reply.error_code().is_some();
    match reply.status {
        200..=299 => true,
        400..=499 => has_error_body || *method == Method::HEAD,
        // A 503 says when to come back.
        503 if reply.retry_after.is_none() => false,
        503 | 504 => reply
            .error_code()
            .is_some_and(|c| ALLOWED_CODES.contains(&c.as_str())),
        _ => false,
    }
}

/// Runs the pass on a fresh three-worker cluster under `root`.
pub async fn run(
    worker: &std::path::Path,
    root: &std::path::Path,
    seed: u64,
    quick: bool,
) -> Result<MalformedResult> {
    let mut result = MalformedResult::default();
    let mut cluster = Cluster::new(worker, root, 3, Some(5))?;
    cluster.start_all()?;
    let http = Http::new();
    let addresses: Vec<String> = cluster
        .workers
        .iter()
        .map(|w| w.http_address.clone())
        .collect();
    let peers: Vec<String> = cluster
        .workers
        .iter()
        .map(|w| w.host_address.clone())
        .collect();
    for (i, a) in addresses.iter().enumerate() {
        anyhow::ensure!(
            client::wait_healthy(&http, a, Duration::from_secs(60)).await,
            "malformed pass: worker {i} never became healthy; log:\n{}",
            cluster.workers[i].log_tail(30)
        );
    }
    let n = if quick { 150 } else { 400 };
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6d61_6c66);
    info!(requests = n, "malformed-input pass");
    for (k, bad) in bad_requests(seed, n).into_iter().enumerate() {
        let address = &addresses[k % addresses.len()];
        result.requests += 1;
        match http
            .send(
                address,
                bad.method.clone(),
                &bad.path,
                bad.body.clone(),
                client::CALL_TIMEOUT,
            )
            .await
        {
            Ok(reply) => {
                *result.by_status.entry(reply.status).or_default() += 1;
                if !acceptable(&bad.method, &reply) {
                    let kind = if reply.status == 500 {
                        Kind::Http500
                    } else {
                        Kind::UnexpectedAnswer
                    };
                    result.violations.push(Violation::new(
                        kind,
                        format!(
                            "{} {} {} ({} body bytes): {} {:?}",
                            bad.family,
                            bad.method,
                            truncate(&bad.path, 120),
                            bad.body.len(),
                            reply.status,
                            truncate(&String::from_utf8_lossy(&reply.body), 200)
                        ),
                    ));
                }
            }
            Err(e) => {
                // A request the client could not even build (invalid URI) is not sent at all.
                if let client::NoReply::ConnectionLost(msg) = &e
                    && msg.starts_with("bad request")
                {
                    result.requests -= 1;
                    continue;
                }
                let kind = if e == client::NoReply::Timeout {
                    Kind::Hang
                } else {
                    Kind::UnexpectedAnswer
                };
                result.violations.push(Violation::new(
                    kind,
                    format!(
                        "{} {} {}: no answer ({e:?})",
                        bad.family,
                        bad.method,
                        truncate(&bad.path, 120)
                    ),
                ));
            }
        }
    }

    // Raw garbage on the HTTP port: the server may answer 400 or close; it must not crash.
    for k in 0..if quick { 10 } else { 30 } {
        let address = &addresses[k % addresses.len()];
        result.raw_connections += 1;
        if let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            let junk = random_bytes(&mut rng, 1..8192);
            let _ = s.write_all(&junk).await;
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        }
    }

    // Random datagrams on every peer port: some shaped like QUIC long-header packets.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    for peer in &peers {
        for _ in 0..if quick { 200 } else { 600 } {
            let mut d = random_bytes(&mut rng, 1..1500);
            if rng.random_bool(0.5) && d.len() > 6 {
                d[0] = 0xC0 | (d[0] & 0x0F);
                d[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
            let _ = socket.send_to(&d, peer).await;
            result.datagrams += 1;
        }
    }

    // The cluster still serves, through every worker.
    for (i, a) in addresses.iter().enumerate() {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let (outcome, _) = http.call(a, Op::Increment, "after-garbage").await;
            if matches!(outcome, Outcome::Ok(_)) {
                break;
            }
            if Instant::now() >= end {
                result.violations.push(Violation::new(
                    Kind::Unhealed,
                    format!("after the garbage, worker {i} no longer serves: {outcome:?}"),
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    for w in &mut cluster.workers {
        if let Some(status) = w.try_exit()? {
            result.violations.push(Violation::new(
                Kind::WorkerCrash,
                format!(
                    "worker {} exited during the malformed pass with {status}; log tail:\n{}",
                    w.index,
                    w.log_tail(15)
                ),
            ));
        }
        if let Some(line) = w.log_text().lines().find(|l| l.contains("panicked")) {
            result.violations.push(Violation::new(
                Kind::WorkerCrash,
                format!("worker {} panicked: {line}", w.index),
            ));
        }
    }
    for w in &mut cluster.workers {
        if w.is_up() {
            w.expect_exit = true;
            w.terminate()?;
        }
    }
    let end = Instant::now() + Duration::from_secs(30);
    for w in &mut cluster.workers {
        while w.is_up() && w.try_exit()?.is_none() && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if w.is_up() {
            result.violations.push(Violation::new(
                Kind::ShutdownStuck,
                format!("worker {} still running 30s after SIGTERM", w.index),
            ));
            w.kill9()?;
        } else if let Some(status) = w.last_exit
            && !status.success()
        {
            result.violations.push(Violation::new(
                Kind::WorkerCrash,
                format!("worker {} exited with {status} after SIGTERM", w.index),
            ));
        }
    }
    Ok(result)
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_owned();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_reproducible_and_cover_every_family() {
        let a = bad_requests(9, 200);
        let b = bad_requests(9, 200);
        assert_eq!(a.len(), 200);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.path, &x.body, &x.method), (&y.path, &y.body, &y.method));
        }
        for family in [
            "bad_json",
            "random_body",
            "bad_actor_id",
            "bad_path",
            "bad_method",
            "bad_alarm",
            "huge_body",
        ] {
            assert!(a.iter().any(|r| r.family == family), "{family}");
        }
    }

    #[test]
    fn answers_are_judged() {
        let reply = |status, body: &str| client::Reply {
            status,
            host: None,
            retry_after: None,
            body: Bytes::from(body.to_owned()),
        };
        let err = r#"{"error": "x", "code": "decode"}"#;
        assert!(acceptable(&Method::POST, &reply(400, err)));
        assert!(!acceptable(&Method::POST, &reply(400, "plain text")));
        assert!(acceptable(&Method::HEAD, &reply(405, "")));
        assert!(!acceptable(&Method::POST, &reply(500, err)));
        let mut busy = reply(503, r#"{"error": "x", "code": "no_quorum"}"#);
        assert!(!acceptable(&Method::POST, &busy), "no Retry-After");
        busy.retry_after = Some("1".into());
        assert!(acceptable(&Method::POST, &busy));
        assert!(!acceptable(
            &Method::POST,
            &reply(503, r#"{"error": "x", "code": "store"}"#)
        ));
        assert!(acceptable(&Method::POST, &reply(200, r#"{"Out": 1}"#)));
    }
}
