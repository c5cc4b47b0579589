//! An application that depends on `francis` alone: an actor with state, called from outside
//! and by another actor, on a host on its own SQLite file.

use std::time::Duration;

use francis::prelude::*;
use serde::{Deserialize, Serialize};

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
        let mut c = self.state.get(ctx).await?;
        match method {
            "add" => c.n += data.decode::<i64>()?,
            "get" => {}
            _ => return Err(Error::actor(format!("no method {method}"))),
        }
        self.state.set(ctx, c.clone()).await?;
        Ok(Some(Envelope::encode(&c.n)?))
    }
}

/// Adds to the counter named in the call, from inside its own turn.
struct Forwarder;

#[async_trait]
impl Actor for Forwarder {
    async fn invoke(
        &mut self,
        ctx: &ActorContext,
        _method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        let (id, by): (String, i64) = data.decode()?;
        let counter = ActorRef::new("counter", id)?;
        ctx.service()
            .invoke(&counter, "add", Envelope::encode(&by)?)
            .await
    }
}

async fn add(service: &HostService, actor: &ActorRef, by: i64) -> i64 {
    service
        .invoke(actor, "add", Envelope::encode(&by).unwrap())
        .await
        .unwrap()
        .unwrap()
        .decode()
        .unwrap()
}

#[tokio::test]
async fn an_application_needs_only_the_facade() {
    let dir = tempfile::tempdir().unwrap();
    let host = LocalHost::builder()
        .address("127.0.0.1:1")
        .sqlite(dir.path().join("data.db"))
        .build()
        .await
        .unwrap();
    let options = ActorOptions {
        idle_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    host.register_actor(
        "counter",
        |init: ActorInit| Counter {
            state: Client::new(init.actor),
        },
        options.clone(),
    )
    .unwrap();
    host.register_actor("forwarder", |_: ActorInit| Forwarder, options)
        .unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (host, shutdown) = (host.clone(), shutdown.clone());
        async move { host.run(shutdown).await }
    });
    tokio::time::timeout(Duration::from_secs(30), host.serving())
        .await
        .expect("the host serves")
        .unwrap();
    let service = host.service();
    let c1 = ActorRef::new("counter", "c1").unwrap();
    assert_eq!(add(&service, &c1, 2).await, 2);
    let f = ActorRef::new("forwarder", "f").unwrap();
    let through: i64 = service
        .invoke(&f, "go", Envelope::encode(&("c1", 3)).unwrap())
        .await
        .unwrap()
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(through, 5);
    let unknown = service
        .invoke(&c1, "nope", Envelope::null())
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::Actor, "{unknown}");
    assert_eq!(add(&service, &c1, 0).await, 5);
    shutdown.cancel();
    running.await.unwrap().unwrap();
    // The same types under both paths: the facade re-exports, it does not wrap.
    let _: francis::core::Envelope = francis::Envelope::null();
    let _: Option<francis::host::Health> = Some(francis::Health::Stopped);
}
