use francis_core::{ActorContext, ActorInit, CancellationToken, Client, Error, TypedActor, actor};
use francis_host::{ActorOptions, LocalHost};

/// A durable counter, one per id.
struct Counter {
    count: Client<i64>,
}

#[actor] // addressed as actor type "counter"
impl Counter {
    /// Adds `n`; answers the new count.
    pub async fn add(&mut self, ctx: &ActorContext, n: i64) -> Result<i64, Error> {
        let count = self.count.get(ctx).await? + n; // cached for the activation
        self.count.set(ctx, count).await?; // durable, fenced by the placement epoch
        Ok(count)
    }

    /// The count, in a shared read-only turn.
    #[peek]
    pub async fn get(&self, ctx: &ActorContext) -> Result<i64, Error> {
        self.count.get(ctx).await
    }
}

/// A page that counts its visits in the counter of the same id: one actor calling another.
struct Page;

#[actor]
impl Page {
    /// Records a visit; answers how many there were.
    pub async fn visit(&mut self, ctx: &ActorContext) -> Result<i64, Error> {
        let counter = Counter::handle(ctx.service(), ctx.actor().actor_id())?;
        counter.add(1).await
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The host logs with `tracing`: install a subscriber to see it (RUST_LOG=debug for more).
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    // The peer address other hosts use (the tests pass a free port).
    let address = std::env::args().nth(1).unwrap_or("127.0.0.1:7571".into());
    let host = LocalHost::builder()
        .address(address)
        .sqlite("data.db")
        .runtime_psks(["a-cluster-key-of-at-least-32-bytes!!"])
        // .peers(["127.0.0.1:7571", "127.0.0.1:7572"])  // replicate with other hosts (Raft)
        .build()
        .await?;
    let counter = |init: ActorInit| Counter {
        count: Client::new(init.actor),
    };
    host.register::<Counter>(counter, ActorOptions::default())?;
    host.register::<Page>(|_| Page, ActorOptions::default())?;
    let service = host.service(); // cheap to clone; use it anywhere
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        // the host is cheap to clone too
        let (host, s) = (host.clone(), shutdown.clone());
        async move { host.run(s).await }
    });
    host.serving().await?; // or the error that stopped `run`
    let home = Page::handle(&service, "home")?; // a typed handle: PageHandle
    let visits = home.visit().await?; // 1, then 2, 3... across restarts
    let counted = Counter::handle(&service, "home")?.get().await?;
    println!("home: {visits} visits, counter at {counted}");
    shutdown.cancel(); // graceful: turns finish, actors deactivate
    running.await??;
    Ok(())
}
