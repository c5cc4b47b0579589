use francis_core::{
    Actor, ActorContext, ActorInit, ActorRef, ActorService, CancellationToken, Client, Envelope,
    Error, async_trait,
};
use francis_host::{ActorOptions, LocalHost};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Default, Clone, Serialize, Deserialize)]
struct Count {
    n: i64,
}

struct Counter {
    state: Client<Count>,
}

#[async_trait]
impl Actor for Counter {
    async fn invoke(
        &mut self,
        ctx: &ActorContext,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        let mut c = self.state.get(ctx).await?; // cached for the activation
        match method {
            "add" => c.n += data.decode::<i64>()?,
            _ => return Err(Error::actor(format!("no method {method}"))),
        }
        self.state.set(ctx, c.clone()).await?; // durable, fenced by the placement epoch
        Ok(Some(Envelope::encode(&c.n)?))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The host logs with `tracing`: install a subscriber to see it (RUST_LOG=debug for more).
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let host = LocalHost::builder()
        .address("127.0.0.1:7571") // the peer address other hosts use
        .sqlite("data.db")
        .runtime_psks(["a-cluster-key-of-at-least-32-bytes!!"])
        // .peers(["127.0.0.1:7571", "127.0.0.1:7572"])  // replicate with other hosts (Raft)
        .build()
        .await?;
    host.register_actor(
        "counter",
        |init: ActorInit| Counter {
            state: Client::new(init.actor),
        },
        ActorOptions {
            idle_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        },
    )?;
    let service = host.service(); // cheap to clone; use it anywhere
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        // the host is cheap to clone too
        let (host, s) = (host.clone(), shutdown.clone());
        async move { host.run(s).await }
    });
    host.serving().await?; // or the error that stopped `run`
    let c1 = ActorRef::new("counter", "c1")?;
    let answer = service.invoke(&c1, "add", Envelope::encode(&1)?).await?;
    let n: i64 = answer.ok_or("the counter answered nothing")?.decode()?;
    println!("c1 = {n}"); // 1, then 2, 3... across restarts
    shutdown.cancel(); // graceful: turns finish, actors deactivate
    running.await??;
    Ok(())
}
