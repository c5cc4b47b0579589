//! `myactor`, the two-worker local cluster's actor: a durable counter.

use std::time::Duration;

use francis_core::{
    Actor, ActorContext, ActorInit, ActorRef, Client, Envelope, Error, async_trait,
};
use francis_host::{ActorOptions, HostError, LocalHost};
use serde::{Deserialize, Serialize};
use tracing::info;

/// The actor type the worker serves.
pub const ACTOR_TYPE: &str = "myactor";
/// Idle actors are deactivated after this long, as in the seed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `-wait` call waits before doing its work.
pub const WAIT: Duration = Duration::from_secs(25);
/// Method suffix that makes a call wait [`WAIT`] first (`increment-wait`).
pub const WAIT_SUFFIX: &str = "-wait";

/// The durable state of one `myactor`, as `GET /state/myactor/{id}` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MyState {
    /// The counter that `increment` and `reset` change.
    pub counter: i64,
    /// How many alarms this actor has received.
    pub alarms: u64,
}

#[derive(Deserialize)]
struct In {
    #[serde(rename = "In")]
    value: i64,
}

#[derive(Serialize)]
struct Out {
    #[serde(rename = "Out")]
    value: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Increment,
    Reset,
    Peek,
}

/// Splits a method into its operation and whether it carries the `-wait` suffix; `None` for a
/// method `myactor` does not have.
fn parse_method(method: &str) -> Option<(Op, bool)> {
    let (base, wait) = match method.strip_suffix(WAIT_SUFFIX) {
        Some(base) => (base, true),
        None => (method, false),
    };
    let op = match base {
        "increment" => Op::Increment,
        "reset" => Op::Reset,
        "peek" => Op::Peek,
        _ => return None,
    };
    Some((op, wait))
}

/// The local cluster's actor: a durable counter.
///
/// Methods (for `invoke` and `peek` alike):
/// - `increment` with `{"In": n}` adds `n` to the counter and answers `{"Out": counter}`;
///   overflowing a 64-bit counter is the actor's own error.
/// - `reset` with `{"In": n}` sets the counter to `n` and answers `{"Out": n}`.
/// - `peek` answers `{"Out": counter}` without changing anything.
/// - A `-wait` suffix (`increment-wait`) first waits 25 s; if the turn is cancelled meanwhile
///   (halt, shutdown, timeout) the call fails with `cancelled` and changes nothing.
///
/// As a `peek` (read-only turn), `increment` and `reset` fail with `read_only`. Each alarm is
/// logged and counted in the state; `deactivate` logs.
#[derive(Debug)]
pub struct MyActor {
    actor: ActorRef,
    host: String,
    state: Client<MyState>,
}

impl MyActor {
    /// Builds one activation; `host` is the advertised address, for the logs.
    pub fn new(init: ActorInit, host: String) -> Self {
        info!(actor_type = init.actor.actor_type(), actor_id = init.actor.actor_id(), host = %host,
              "Actor created");
        MyActor {
            state: Client::new(init.actor.clone()),
            actor: init.actor,
            host,
        }
    }

    async fn handle(
        &self,
        ctx: &ActorContext,
        entry: &'static str,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        info!(actor_type = self.actor.actor_type(), actor_id = self.actor.actor_id(),
              host = %self.host, entry, method, "Actor invoked");
        let Some((op, wait)) = parse_method(method) else {
            return Err(Error::MethodNotImplemented {
                actor: self.actor.clone(),
                entry,
                method: method.to_owned(),
            });
        };
        // Check the input before waiting, so a bad call fails at once.
        let input = match op {
            Op::Peek => 0,
            Op::Increment | Op::Reset => data.decode::<In>()?.value,
        };
        if wait {
            tokio::select! {
                _ = tokio::time::sleep(WAIT) => {}
                _ = ctx.cancelled() => return Err(Error::Cancelled),
            }
        }
        let mut state = self.state.get(ctx).await?;
        match op {
            Op::Peek => {}
            Op::Increment => {
                state.counter = state.counter.checked_add(input).ok_or_else(|| {
                    Error::actor(format!(
                        "counter overflow: {} + {input} does not fit in a 64-bit integer",
                        state.counter
                    ))
                })?;
                self.state.set(ctx, state.clone()).await?;
            }
            Op::Reset => {
                state.counter = input;
                self.state.set(ctx, state.clone()).await?;
            }
        }
        Ok(Some(Envelope::encode(&Out {
            value: state.counter,
        })?))
    }
}

#[async_trait]
impl Actor for MyActor {
    async fn invoke(
        &mut self,
        ctx: &ActorContext,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        self.handle(ctx, "invoke", method, data).await
    }

    async fn peek(
        &self,
        ctx: &ActorContext,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        self.handle(ctx, "peek", method, data).await
    }

    async fn alarm(
        &mut self,
        ctx: &ActorContext,
        name: &str,
        data: Option<Envelope>,
    ) -> Result<(), Error> {
        let data = data.map(|d| d.to_string()).unwrap_or_else(|| "null".into());
        info!(actor_type = self.actor.actor_type(), actor_id = self.actor.actor_id(),
              host = %self.host, alarm = name, data = %data, "Actor received alarm");
        let mut state = self.state.get(ctx).await?;
        state.alarms += 1;
        self.state.set(ctx, state).await
    }

    async fn deactivate(&mut self, _ctx: &ActorContext) -> Result<(), Error> {
        info!(actor_type = self.actor.actor_type(), actor_id = self.actor.actor_id(),
              host = %self.host, "Actor deactivated");
        Ok(())
    }
}

/// Registers `myactor` on `host` with the local cluster's options (idle timeout 10 s).
pub fn register(host: &LocalHost) -> Result<(), HostError> {
    let address = host.address().to_owned();
    host.register_actor(
        ACTOR_TYPE,
        move |init: ActorInit| MyActor::new(init, address.clone()),
        ActorOptions {
            idle_timeout: Some(IDLE_TIMEOUT),
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_the_wait_suffix() {
        assert_eq!(parse_method("increment"), Some((Op::Increment, false)));
        assert_eq!(parse_method("increment-wait"), Some((Op::Increment, true)));
        assert_eq!(parse_method("reset"), Some((Op::Reset, false)));
        assert_eq!(parse_method("reset-wait"), Some((Op::Reset, true)));
        assert_eq!(parse_method("peek"), Some((Op::Peek, false)));
        assert_eq!(parse_method("peek-wait"), Some((Op::Peek, true)));
        for unknown in [
            "",
            "-wait",
            "increment-wait-wait",
            "Increment",
            "decrement",
            "wait",
        ] {
            assert_eq!(parse_method(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn state_shape_is_stable_and_tolerant() {
        let s = MyState {
            counter: 84,
            alarms: 2,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"counter":84,"alarms":2}"#
        );
        let old: MyState = serde_json::from_str(r#"{"counter":5}"#).unwrap();
        assert_eq!(
            old,
            MyState {
                counter: 5,
                alarms: 0
            }
        );
    }
}
