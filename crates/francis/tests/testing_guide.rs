//! The code of the testing guide (docs/guide/testing.md): an actor tested on an in-memory store
//! with paused time, so a one-hour alarm and an idle timeout take no real time.

use std::sync::Arc;
use std::time::Duration;

use francis::prelude::*;
use francis::{DeactivationReason, HostEvent, TokioClock};
use serde::{Deserialize, Serialize};

#[derive(Default, Clone, Serialize, Deserialize)]
struct Trial {
    started: bool,
    expired: bool,
}

/// A free trial that expires an hour after it starts.
struct Subscription {
    trial: Client<Trial>,
}

#[actor]
impl Subscription {
    pub async fn start_trial(&mut self, ctx: &ActorContext) -> Result<(), Error> {
        self.trial
            .set(
                ctx,
                Trial {
                    started: true,
                    expired: false,
                },
            )
            .await?;
        ctx.set_alarm("expire", AlarmProperties::after(Duration::from_secs(3600)))
            .await
    }

    #[peek]
    pub async fn expired(&self, ctx: &ActorContext) -> Result<bool, Error> {
        Ok(self.trial.get(ctx).await?.expired)
    }

    #[alarm]
    async fn on_alarm(
        &mut self,
        ctx: &ActorContext,
        _name: &str,
        _data: Option<Envelope>,
    ) -> Result<(), Error> {
        let mut trial = self.trial.get(ctx).await?;
        trial.expired = true;
        self.trial.set(ctx, trial).await
    }
}

/// A host on an in-memory store and tokio's (paused) clock, serving `Subscription`.
async fn test_host() -> (LocalHost, CancellationToken) {
    let host = LocalHost::builder()
        .address("127.0.0.1:7571") // not bound: a host without peers serves no peer port
        .in_memory()
        .clock(Arc::new(TokioClock::new()))
        .build()
        .await
        .unwrap();
    let options = ActorOptions {
        idle_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    host.register::<Subscription>(
        |init: ActorInit| Subscription {
            trial: Client::new(init.actor),
        },
        options,
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let (host, shutdown) = (host.clone(), shutdown.clone());
        async move { host.run(shutdown).await }
    });
    host.serving().await.unwrap();
    (host, shutdown)
}

#[tokio::test(start_paused = true)]
async fn a_trial_expires_after_an_hour() {
    let (host, shutdown) = test_host().await;
    let mut events = host.events();
    let sub = Subscription::handle(host.service(), "ada").unwrap();
    sub.start_trial().await.unwrap();
    assert!(!sub.expired().await.unwrap());

    // Paused time jumps to the next timer whenever every task waits: the idle timeout
    // deactivates the actor after a minute, and the alarm fires an hour in.
    let mut went_idle = false;
    let started = tokio::time::Instant::now();
    loop {
        match events.recv().await.unwrap() {
            HostEvent::Deactivated { reason, .. } => {
                went_idle |= reason == DeactivationReason::Idle
            }
            HostEvent::AlarmFired { succeeded, .. } => break assert!(succeeded),
            _ => continue,
        }
    }
    assert!(
        went_idle,
        "the actor was deactivated when idle, before the alarm"
    );
    assert!(started.elapsed() >= Duration::from_secs(3600));
    // The alarm re-activated the actor; its state was durable across the deactivation.
    assert!(sub.expired().await.unwrap());
    shutdown.cancel();
}
