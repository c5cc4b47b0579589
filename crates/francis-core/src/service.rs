//! The service actors and applications call.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::alarm::AlarmProperties;
use crate::envelope::Envelope;
use crate::error::Error;
use crate::reference::ActorRef;

/// A shared handle to the service.
pub type Service = Arc<dyn ActorService>;

/// Default page size of [`ActorService::list_states`].
pub const DEFAULT_LIST_LIMIT: u32 = 100;
/// Largest page size of [`ActorService::list_states`].
pub const MAX_LIST_LIMIT: u32 = 1000;

/// Options of a state write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStateOptions {
    /// The state expires (reads as absent) this long after the write.
    pub ttl: Option<Duration>,
}

impl SetStateOptions {
    /// State that expires `ttl` after the write.
    pub fn with_ttl(ttl: Duration) -> Self {
        SetStateOptions { ttl: Some(ttl) }
    }
}

/// Options of [`ActorService::list_states`]: keyset pagination by actor id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListStatesOptions {
    /// Only ids strictly after this one (the previous page's `next`).
    pub after: Option<String>,
    /// Page size; default 100, at most 1000.
    pub limit: Option<u32>,
    /// Whether to return the state documents, or only the ids.
    pub include_data: bool,
}

impl ListStatesOptions {
    /// The page size to use, or [`Error::InvalidArgument`] for 0 or more than 1000.
    pub fn effective_limit(&self) -> Result<u32, Error> {
        match self.limit {
            None => Ok(DEFAULT_LIST_LIMIT),
            Some(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(Error::invalid_argument(
                "limit",
                format!("{n} is outside 1..={MAX_LIST_LIMIT}"),
            )),
        }
    }
}

/// One actor's entry in a [`StatePage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateItem {
    /// The actor id.
    pub actor_id: String,
    /// The state, when asked for.
    pub data: Option<Envelope>,
}

/// A page of stored states of one actor type, in ascending id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatePage {
    /// The entries.
    pub items: Vec<StateItem>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// What applications and actors call: invocations, state, alarms, halts.
///
/// Every method refuses references to reserved actor types ([`Error::ActorTypeReserved`]) and
/// reserved methods ([`Error::MethodReserved`]). Errors keep their kind across hosts.
#[async_trait]
pub trait ActorService: Send + Sync + 'static {
    /// Runs `method` as an exclusive turn on the actor's single activation, activating it on
    /// some host first if needed.
    async fn invoke(
        &self,
        actor: &ActorRef,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error>;

    /// Runs `method` as a shared, read-only turn.
    async fn peek(
        &self,
        actor: &ActorRef,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error>;

    /// Reads the actor's stored state; [`Error::StateNotFound`] when there is none.
    async fn get_state(&self, actor: &ActorRef) -> Result<Envelope, Error>;

    /// Writes the actor's state from outside it. The write runs as an exclusive turn of the
    /// actor's activation (activating it if needed), so the actor never sees stale state.
    async fn set_state(
        &self,
        actor: &ActorRef,
        value: Envelope,
        options: SetStateOptions,
    ) -> Result<(), Error>;

    /// Deletes the actor's state from outside it, like [`ActorService::set_state`].
    async fn delete_state(&self, actor: &ActorRef) -> Result<(), Error>;

    /// Lists stored states of one actor type.
    async fn list_states(
        &self,
        actor_type: &str,
        options: ListStatesOptions,
    ) -> Result<StatePage, Error>;

    /// Creates or replaces a named alarm of the actor (the actor need not be active).
    async fn set_alarm(
        &self,
        actor: &ActorRef,
        name: &str,
        properties: AlarmProperties,
    ) -> Result<(), Error>;

    /// Reads a named alarm; [`Error::AlarmNotFound`] when there is none.
    async fn get_alarm(&self, actor: &ActorRef, name: &str) -> Result<AlarmProperties, Error>;

    /// Deletes a named alarm; [`Error::AlarmNotFound`] when there is none.
    async fn delete_alarm(&self, actor: &ActorRef, name: &str) -> Result<(), Error>;

    /// Deactivates the actor once its current turn ends; [`Error::ActorNotHosted`] when it is
    /// not active on this host.
    async fn halt(&self, actor: &ActorRef) -> Result<(), Error>;

    /// Deactivates every actor active on this host.
    async fn halt_all(&self) -> Result<(), Error>;
}
