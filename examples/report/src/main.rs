//! A scheduled report: a `report` actor sets a repeating alarm; each firing runs as an
//! exclusive turn of the actor and writes the next report into its durable state. The alarm is
//! durable too: if the host stops, the schedule goes on when it (or another host) starts.

use std::time::Duration;

use francis::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default, Clone, Serialize, Deserialize)]
struct Reports {
    /// One line per report, oldest first.
    lines: Vec<String>,
}

struct Report {
    reports: Client<Reports>,
}

#[actor]
impl Report {
    /// Starts reporting every `seconds` seconds (replacing any earlier schedule).
    pub async fn schedule(&mut self, ctx: &ActorContext, seconds: u64) -> Result<(), Error> {
        let every = AlarmProperties::every(Duration::from_secs(seconds))?;
        ctx.set_alarm("report", every).await
    }

    /// Stops the schedule.
    pub async fn cancel(&mut self, ctx: &ActorContext) -> Result<(), Error> {
        ctx.delete_alarm("report").await
    }

    /// The reports written so far.
    #[peek]
    pub async fn written(&self, ctx: &ActorContext) -> Result<Vec<String>, Error> {
        Ok(self.reports.get(ctx).await?.lines)
    }

    #[alarm]
    async fn on_alarm(
        &mut self,
        ctx: &ActorContext,
        _name: &str,
        _data: Option<Envelope>,
    ) -> Result<(), Error> {
        let mut reports = self.reports.get(ctx).await?;
        let n = reports.lines.len() + 1;
        reports
            .lines
            .push(format!("report {n} for {}", ctx.actor().actor_id()));
        self.reports.set(ctx, reports).await
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The peer address other hosts use (the tests pass a free port).
    let address = std::env::args().nth(1).unwrap_or("127.0.0.1:7611".into());
    let host = LocalHost::builder()
        .address(address)
        .sqlite("reports.db")
        .runtime_psks(["a-cluster-key-of-at-least-32-bytes!!"])
        .build()
        .await?;
    let report = |init: ActorInit| Report {
        reports: Client::new(init.actor),
    };
    host.register::<Report>(report, ActorOptions::default())?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (host, s) = (host.clone(), shutdown.clone());
        async move { host.run(s).await }
    });
    host.serving().await?;

    let service = host.service();
    let daily = Report::handle(&service, "sales")?;
    daily.schedule(1).await?;
    // Wait (at most half a minute) for three reports.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let written = loop {
        let written = daily.written().await?;
        if written.len() >= 3 {
            break written;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("only {} reports after 30 s", written.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    daily.cancel().await?;
    for line in &written[..3] {
        println!("{line}");
    }
    let sales = ActorRef::new(Report::TYPE, "sales")?;
    match service.get_alarm(&sales, "report").await {
        Err(e) if e.kind() == ErrorKind::AlarmNotFound => println!("schedule cancelled"),
        other => return Err(format!("the alarm should be gone: {other:?}").into()),
    }
    shutdown.cancel();
    running.await??;
    Ok(())
}
