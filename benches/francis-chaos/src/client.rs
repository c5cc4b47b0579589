//! The HTTP client: one request with a deadline, its answer classified into an [`Outcome`].

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::history::{Op, Outcome};

/// How long a call may take before it counts as a hang.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The answer header naming the host that ran the actor.
pub const HOST_HEADER: &str = "x-francis-host";

/// A raw answer.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `x-francis-host`, if present.
    pub host: Option<String>,
    /// `retry-after`, if present.
    pub retry_after: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The `code` of a `{error, code}` body, if the body is one.
    pub fn error_code(&self) -> Option<String> {
        let json = self.json()?;
        json.get("error")?.as_str()?;
        Some(json.get("code")?.as_str()?.to_owned())
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoReply {
    /// Nothing listens (the worker is down).
    Unreachable,
    /// The connection broke before an answer.
    ConnectionLost(String),
    /// No answer within the timeout.
    Timeout,
}

impl NoReply {
    /// The failure code recorded for it.
    pub fn code(&self) -> &'static str {
        match self {
            NoReply::Unreachable => "unreachable",
            NoReply::ConnectionLost(_) => "connection_lost",
            NoReply::Timeout => "hang",
        }
    }
}

/// A plain HTTP/1.1 client shared by every task.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// A client with short-lived pooled connections (workers restart on the same ports).
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        Http {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(2))
                .build(connector),
        }
    }

    /// Sends one request to `address` and waits for the whole answer, at most `timeout`.
    pub async fn send(
        &self,
        address: &str,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, NoReply> {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{address}{path_and_query}"))
            .body(Full::new(body))
            .map_err(|e| NoReply::ConnectionLost(format!("bad request: {e}")))?;
        let answer = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    NoReply::Unreachable
                } else {
                    NoReply::ConnectionLost(format!("{e:?}"))
                }
            })?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let host = header(HOST_HEADER);
            let retry_after = header("retry-after");
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| NoReply::ConnectionLost(e.to_string()))?
                .to_bytes();
            Ok(Reply {
                status,
                host,
                retry_after,
                body,
            })
        };
        tokio::time::timeout(timeout, answer)
            .await
            .map_err(|_| NoReply::Timeout)?
    }

    /// Calls `op` on `myactor/{actor_id}` through `address`; returns the outcome, the answering
    /// host and how long it took.
    pub async fn call(&self, address: &str, op: Op, actor_id: &str) -> (Outcome, Option<String>) {
        let (path, body) = match op {
            Op::Increment => (
                format!("/invoke/myactor/{actor_id}/increment"),
                Bytes::from_static(br#"{"In": 1}"#),
            ),
            Op::Peek => (format!("/peek/myactor/{actor_id}/peek"), Bytes::new()),
        };
        match self
            .send(address, Method::POST, &path, body, CALL_TIMEOUT)
            .await
        {
            Err(NoReply::Timeout) => (Outcome::Hung, None),
            Err(other) => (
                Outcome::Failed {
                    status: None,
                    code: other.code().to_owned(),
                },
                None,
            ),
            Ok(reply) => {
                let outcome = classify(&reply);
                (outcome, reply.host)
            }
        }
    }
}

/// A reply as an outcome: `200 {"Out": n}` is `Ok(n)`; anything else a failure named by the
/// body's code (or `bad_body` / `status_NNN`).
pub fn classify(reply: &Reply) -> Outcome {
    if reply.status == 200 {
        return match reply
            .json()
            .and_then(|j| j.get("Out").and_then(Value::as_i64))
        {
            Some(v) => Outcome::Ok(v),
            None => Outcome::Failed {
                status: Some(200),
                code: "bad_body".to_owned(),
            },
        };
    }
    Outcome::Failed {
        status: Some(reply.status),
        code: reply
            .error_code()
            .unwrap_or_else(|| format!("status_{}", reply.status)),
    }
}

/// Polls `/healthz` of `address` until it answers 200 or `deadline` passes.
pub async fn wait_healthy(http: &Http, address: &str, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(r) = http
            .send(
                address,
                Method::GET,
                "/healthz",
                Bytes::new(),
                Duration::from_secs(2),
            )
            .await
            && r.status == 200
        {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            host: None,
            retry_after: None,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(&reply(200, r#"{"Out": 7}"#)), Outcome::Ok(7));
        assert_eq!(
            classify(&reply(200, "nope")),
            Outcome::Failed {
                status: Some(200),
                code: "bad_body".into()
            }
        );
        assert_eq!(
            classify(&reply(503, r#"{"error": "x", "code": "no_quorum"}"#)),
            Outcome::Failed {
                status: Some(503),
                code: "no_quorum".into()
            }
        );
        assert_eq!(
            classify(&reply(502, "")),
            Outcome::Failed {
                status: Some(502),
                code: "status_502".into()
            }
        );
    }
}
