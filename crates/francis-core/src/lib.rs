//! Core types of Francis, a framework for distributed virtual actors.
//!
//! An actor is addressed by an [`ActorRef`] (type and id). It always exists virtually: the first
//! call or alarm activates it on exactly one host of the cluster, it runs one exclusive turn at a
//! time ([`Actor::invoke`], [`Actor::alarm`]) or several shared read-only turns ([`Actor::peek`]),
//! and it is deactivated when idle. Its state is durable and reached through a typed [`Client`].
//!
//! This crate holds only types and traits; an app that defines actors depends on it, and on
//! `francis-host` to run them.
//!
//! ```
//! use francis_core::{async_trait, Actor, ActorContext, ActorInit, Client, Envelope, Error};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Clone, Serialize, Deserialize)]
//! struct Counter { value: i64 }
//!
//! struct CounterActor { state: Client<Counter> }
//!
//! impl CounterActor {
//!     fn new(init: ActorInit) -> Self {
//!         Self { state: Client::new(init.actor) }
//!     }
//! }
//!
//! #[async_trait]
//! impl Actor for CounterActor {
//!     async fn invoke(&mut self, ctx: &ActorContext, method: &str, data: Envelope)
//!         -> Result<Option<Envelope>, Error>
//!     {
//!         let mut counter = self.state.get(ctx).await?;
//!         counter.value += data.decode::<i64>()?;
//!         self.state.set(ctx, counter.clone()).await?;
//!         Ok(Some(Envelope::encode(&counter.value)?))
//!     }
//! }
//! ```

mod actor;
mod alarm;
mod client;
mod envelope;
mod error;
mod interval;
mod reference;
mod service;

pub use actor::{ActivationState, Actor, ActorContext, ActorFactory, ActorInit, ContextParts};
pub use alarm::{AlarmProperties, next_due_after};
pub use async_trait::async_trait;
/// The time types alarms take ([`chrono::DateTime`], [`chrono::Utc`]), so an application
/// needs no chrono dependency of its own.
pub use chrono;
pub use client::Client;
pub use envelope::Envelope;
pub use error::{Error, ErrorKind, Result};
pub use interval::{Interval, format_interval, parse_duration, parse_interval};
pub use reference::{
    ActorRef, MAX_NAME_LEN, RESERVED_PREFIX, validate_alarm_name, validate_method, validate_name,
};
pub use service::{
    ActorService, DEFAULT_LIST_LIMIT, ListStatesOptions, MAX_LIST_LIMIT, Service, SetStateOptions,
    StateItem, StatePage,
};
pub use tokio_util::sync::CancellationToken;
