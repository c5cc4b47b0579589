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
pub mod typed;

// The `#[actor]` attribute names this crate `::francis_core`, in its own tests too.
extern crate self as francis_core;

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
pub use typed::{ActorError, CallError, IntoService, TypedActor};

/// Turns an `impl` block into a typed actor: its methods become the actor's methods, called by
/// name over the wire and through a generated typed handle.
///
/// ```
/// use francis_core::{actor, ActorContext, CallError, Client, Error, TypedActor};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, thiserror::Error)]
/// enum CounterError {
///     #[error("the counter would go below zero (it is {0})")]
///     Negative(i64),
/// }
///
/// struct Counter {
///     state: Client<i64>,
/// }
///
/// // Addressed as "counter" (`name = "..."` picks another); callers decode CounterError.
/// #[actor(error = CounterError)]
/// impl Counter {
///     /// Adds `n` and answers the new value.
///     pub async fn add(&mut self, ctx: &ActorContext, n: i64) -> Result<i64, Error> {
///         let value = self.state.get(ctx).await? + n;
///         if value < 0 {
///             Err(CounterError::Negative(value - n))?;
///         }
///         self.state.set(ctx, value).await?;
///         Ok(value)
///     }
///
///     /// The current value, in a shared read-only turn.
///     #[peek]
///     pub async fn get(&self, ctx: &ActorContext) -> Result<i64, Error> {
///         self.state.get(ctx).await
///     }
/// }
///
/// # async fn call(service: francis_core::Service) -> Result<(), Box<dyn std::error::Error>> {
/// let counter = Counter::handle(&service, "c1")?; // a CounterHandle
/// let n: i64 = counter.add(5).await?;
/// match counter.add(-100).await {
///     Err(CallError::Actor(CounterError::Negative(was))) => assert_eq!(was, n),
///     other => panic!("{other:?}"),
/// }
/// # Ok(()) }
/// ```
///
/// What it builds:
/// - The [`Actor`] implementation: every `pub async fn` of the block with a `&self` or
///   `&mut self` receiver is a method, called by its Rust name. `#[peek]` marks a read-only
///   method (it takes `&self`) that runs in a shared turn; every other method runs in an
///   exclusive turn (a peek method can be invoked too). Other functions of the block are left
///   as they are.
/// - An optional first parameter `&ActorContext` receives the turn's context; the remaining
///   parameters are the call's arguments (owned types that are `Serialize` and
///   `Deserialize`): the payload is `null` for none, the value itself for one, and a JSON array
///   for several, so an untyped caller sends `5` to `add`.
/// - The return type is `Result<T, E>`, `francis_core::Result<T>`, or a plain `T`. `T` is the
///   answer, as JSON. `E` is [`Error`] or the actor's own error type (any `Serialize +
///   Deserialize + Display + Debug` type): it reaches callers on any host with its value. Such
///   an error also converts into [`Error`] with `?`, keeping its value, so a method can return
///   `Result<T, Error>` and still fail with the actor's own error; `#[actor(error = E)]` tells
///   the handle to decode `E` for those methods.
/// - `#[alarm]` marks the alarm hook, `async fn(&mut self, &ActorContext, &str, Option<Envelope>)
///   -> Result<(), E>`, and `#[deactivate]` the deactivation hook, `async fn(&mut self,
///   &ActorContext) -> Result<(), E>`.
/// - [`TypedActor`] for the type, with its type name, and `<Type>Handle`: a cheap-to-clone
///   handle with one async method per method, from [`TypedActor::handle`]. A method whose error
///   type is `E` (its own, or the declared one) answers `Result<T, CallError<E>>`
///   ([`CallError::Actor`] holds the actor's own error, [`CallError::Francis`] a failed call);
///   one that fails only with [`Error`] answers `Result<T, Error>`.
///
/// The handle's methods take the parameters as the actor's do (names included; `Self` becomes the
/// actor type) and keep their `#[cfg]`. A method cannot be called `handle` or `handle_for` (it
/// would hide [`TypedActor::handle`]), nor `clone`, `as_ref` or `fmt` (the handle's own).
/// "Francis's `Error`" is recognised by how it is written: `Error`, `francis::Error`,
/// `francis_core::Error`, `francis::core::Error` or `francis::prelude::Error`; an error type of
/// the application's own also called `Error` is written with its path.
///
/// Register it with `LocalHost::register::<Counter>(factory, options)`; untyped callers (the
/// worker's HTTP API, [`ActorService::invoke`]) reach the same methods by name.
pub use francis_macros::actor;
