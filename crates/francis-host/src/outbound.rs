//! The service an actor's turns use to reach other actors: every call carries the turn's call
//! chain, and leaves only once the turn's state writes are durable (the output gate).

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use francis_core::{
    ActorRef, ActorService, AlarmProperties, Envelope, Error, ListStatesOptions, SetStateOptions,
    StatePage,
};

use crate::chain::CallChain;
use crate::runtime::Outbound;
use crate::service::{HostInner, HostService, new_request_id};
use crate::state::ActivationStore;

/// How the turns of `host`'s activations reach other actors: through its routing, carrying
/// their call chain, after their writes are durable.
pub(crate) fn for_host(host: &Arc<HostInner>) -> Outbound {
    let host = Arc::downgrade(host);
    Box::new(move |incoming, actor, writes| {
        Arc::new(ChainedService::new(
            host.clone(),
            incoming,
            actor.clone(),
            writes,
        ))
    })
}

/// The service an actor's turns use: every call it makes carries the chain of the call that
/// asked for the turn, then the actor itself.
pub(crate) struct ChainedService {
    /// The host, weakly: an activation's service does not keep its host alive.
    host: Weak<HostInner>,
    /// The chain of the call the turn serves (empty outside one).
    incoming: CallChain,
    actor: ActorRef,
    /// The calling activation's writes, committed before any call leaves (the output gate).
    writes: Arc<ActivationStore>,
}

impl std::fmt::Debug for ChainedService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainedService")
            .field("actor", &self.actor)
            .field("incoming", &self.incoming)
            .finish_non_exhaustive()
    }
}

impl ChainedService {
    /// The service of a turn of `actor` serving a call whose chain is `incoming`.
    pub(crate) fn new(
        host: Weak<HostInner>,
        incoming: CallChain,
        actor: ActorRef,
        writes: Arc<ActivationStore>,
    ) -> Self {
        ChainedService {
            host,
            incoming,
            actor,
            writes,
        }
    }

    /// The host's service, while the host exists.
    fn host(&self) -> Result<HostService, Error> {
        self.host
            .upgrade()
            .map(HostService::new)
            .ok_or(Error::ShuttingDown)
    }

    /// Calls `method` of `actor` (`read_only`: a peek), carrying this turn's chain.
    async fn call(
        &self,
        actor: &ActorRef,
        method: &str,
        data: Envelope,
        read_only: bool,
    ) -> Result<Option<Envelope>, Error> {
        let chain = self.chain_to(actor)?;
        self.writes.flush().await?;
        self.host()?
            .dispatch(actor, method, data, read_only, new_request_id(), chain)
            .await
            .map(|i| i.output)
    }

    /// The chain a call to `target` from this turn carries: the incoming chain, then this
    /// actor. Refused when `target` is already in it (this actor included).
    fn chain_to(&self, target: &ActorRef) -> Result<CallChain, Error> {
        let chain = self.incoming.then(&self.actor);
        chain.check(target)?;
        Ok(chain)
    }
}

#[async_trait]
impl ActorService for ChainedService {
    async fn invoke(
        &self,
        actor: &ActorRef,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        self.call(actor, method, data, false).await
    }

    async fn peek(
        &self,
        actor: &ActorRef,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        self.call(actor, method, data, true).await
    }

    async fn get_state(&self, actor: &ActorRef) -> Result<Envelope, Error> {
        self.host()?.get_state(actor).await
    }

    async fn set_state(
        &self,
        actor: &ActorRef,
        value: Envelope,
        options: SetStateOptions,
    ) -> Result<(), Error> {
        // A write from outside runs as a turn of that actor: it too would wait on the chain.
        self.chain_to(actor)?;
        self.writes.flush().await?;
        self.host()?.set_state(actor, value, options).await
    }

    async fn delete_state(&self, actor: &ActorRef) -> Result<(), Error> {
        self.chain_to(actor)?;
        self.writes.flush().await?;
        self.host()?.delete_state(actor).await
    }

    async fn list_states(
        &self,
        actor_type: &str,
        options: ListStatesOptions,
    ) -> Result<StatePage, Error> {
        self.host()?.list_states(actor_type, options).await
    }

    async fn set_alarm(
        &self,
        actor: &ActorRef,
        name: &str,
        properties: AlarmProperties,
    ) -> Result<(), Error> {
        self.writes.flush().await?;
        self.host()?.set_alarm(actor, name, properties).await
    }

    async fn get_alarm(&self, actor: &ActorRef, name: &str) -> Result<AlarmProperties, Error> {
        self.host()?.get_alarm(actor, name).await
    }

    async fn delete_alarm(&self, actor: &ActorRef, name: &str) -> Result<(), Error> {
        self.writes.flush().await?;
        self.host()?.delete_alarm(actor, name).await
    }

    async fn halt(&self, actor: &ActorRef) -> Result<(), Error> {
        self.host()?.halt(actor).await
    }

    async fn halt_all(&self) -> Result<(), Error> {
        self.host()?.halt_all().await
    }
}
