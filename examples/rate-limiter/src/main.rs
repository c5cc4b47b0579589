//! A rate limiter: one `limiter` actor per key (a user, an API token...) holding a token
//! bucket. Because an actor runs one turn at a time, the bucket needs no lock and no
//! transaction, and because it is addressed by key, every host of a cluster sends the calls of
//! one key to the same bucket. The bucket lives in memory: it is rebuilt full when the actor is
//! activated again, which is what a limiter wants (nothing to store, nothing to clean up).

use std::time::{Duration, Instant};

use francis::prelude::*;
use serde::{Deserialize, Serialize};

/// How many calls a key may make at once, and how fast that allowance comes back.
const CAPACITY: f64 = 3.0;
const REFILL_PER_SECOND: f64 = 0.1; // one token every ten seconds

/// Why a call was refused.
#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
enum Limited {
    #[error("rate limited: retry in {retry_in_ms} ms")]
    Exhausted { retry_in_ms: u64 },
}

struct Limiter {
    tokens: f64,
    refilled: Instant,
}

impl Limiter {
    fn new() -> Self {
        Limiter {
            tokens: CAPACITY,
            refilled: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * REFILL_PER_SECOND;
        self.tokens = (self.tokens + earned).min(CAPACITY);
        self.refilled = now;
    }
}

#[actor]
impl Limiter {
    /// Takes one token; answers how many are left, or refuses with when to retry.
    pub async fn acquire(&mut self) -> Result<u32, Limited> {
        self.refill();
        if self.tokens < 1.0 {
            let wait = (1.0 - self.tokens) / REFILL_PER_SECOND;
            let retry_in_ms = Duration::from_secs_f64(wait).as_millis().max(1) as u64;
            return Err(Limited::Exhausted { retry_in_ms });
        }
        self.tokens -= 1.0;
        Ok(self.tokens.floor() as u32)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The peer address other hosts use (the tests pass a free port).
    let address = std::env::args().nth(1).unwrap_or("127.0.0.1:7601".into());
    let host = LocalHost::builder()
        .address(address)
        .sqlite("limits.db")
        .runtime_psks(["a-cluster-key-of-at-least-32-bytes!!"])
        .build()
        .await?;
    host.register::<Limiter>(|_| Limiter::new(), ActorOptions::default())?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (host, s) = (host.clone(), shutdown.clone());
        async move { host.run(s).await }
    });
    host.serving().await?;

    let service = host.service();
    for key in ["alice", "bob"] {
        let limiter = Limiter::handle(&service, key)?;
        let calls = if key == "alice" { 5 } else { 1 };
        for call in 1..=calls {
            match limiter.acquire().await {
                Ok(left) => println!("{key} call {call}: allowed, {left} left"),
                Err(CallError::Actor(Limited::Exhausted { retry_in_ms })) => {
                    assert!(retry_in_ms <= 10_000);
                    println!("{key} call {call}: refused, retry within ten seconds")
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
    shutdown.cancel();
    running.await??;
    Ok(())
}
