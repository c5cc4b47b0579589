//! The call chain: the actors an invocation passed through, carried with every call (across
//! hosts too), so a call that would enter an actor already waiting further up the chain is
//! refused at once instead of waiting for a turn that cannot end.

use std::sync::Arc;

use async_trait::async_trait;
use francis_core::{
    ActorRef, ActorService, AlarmProperties, Envelope, Error, ListStatesOptions, SetStateOptions,
    StatePage,
};

use crate::service::{HostService, new_request_id};
use crate::state::ActivationStore;

/// The actors a call passed through, first caller first. Empty (and allocation-free) for a
/// call from outside any turn. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CallChain(Option<Arc<[ActorRef]>>);

impl CallChain {
    /// This chain, then `actor`: the chain of the calls a turn of `actor` makes.
    pub(crate) fn then(&self, actor: &ActorRef) -> CallChain {
        let mut links = self.links().to_vec();
        links.push(actor.clone());
        CallChain::from_links(links)
    }

    /// The actors, first caller first.
    pub(crate) fn links(&self) -> &[ActorRef] {
        self.0.as_deref().unwrap_or(&[])
    }

    /// Whether no actor is in it.
    pub(crate) fn is_empty(&self) -> bool {
        self.links().is_empty()
    }

    /// A chain from its links.
    pub(crate) fn from_links(links: Vec<ActorRef>) -> CallChain {
        CallChain((!links.is_empty()).then(|| links.into()))
    }

    /// Refuses a call to `target` that would re-enter an actor of this chain.
    pub(crate) fn check(&self, target: &ActorRef) -> Result<(), Error> {
        crate::policy::check_reentry(self.links(), target)
    }
}

/// The service an actor's turns use: every call it makes carries the chain of the call that
/// asked for the turn, then the actor itself.
#[derive(Debug)]
pub(crate) struct ChainedService {
    host: HostService,
    /// The chain of the call the turn serves (empty outside one).
    incoming: CallChain,
    actor: ActorRef,
    /// The calling activation's writes, committed before any call leaves (the output gate).
    writes: Arc<ActivationStore>,
}

impl ChainedService {
    /// The service of a turn of `actor` serving a call whose chain is `incoming`.
    pub(crate) fn new(
        host: HostService,
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
        self.host
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
        self.host.get_state(actor).await
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
        self.host.set_state(actor, value, options).await
    }

    async fn delete_state(&self, actor: &ActorRef) -> Result<(), Error> {
        self.chain_to(actor)?;
        self.writes.flush().await?;
        self.host.delete_state(actor).await
    }

    async fn list_states(
        &self,
        actor_type: &str,
        options: ListStatesOptions,
    ) -> Result<StatePage, Error> {
        self.host.list_states(actor_type, options).await
    }

    async fn set_alarm(
        &self,
        actor: &ActorRef,
        name: &str,
        properties: AlarmProperties,
    ) -> Result<(), Error> {
        self.writes.flush().await?;
        self.host.set_alarm(actor, name, properties).await
    }

    async fn get_alarm(&self, actor: &ActorRef, name: &str) -> Result<AlarmProperties, Error> {
        self.host.get_alarm(actor, name).await
    }

    async fn delete_alarm(&self, actor: &ActorRef, name: &str) -> Result<(), Error> {
        self.writes.flush().await?;
        self.host.delete_alarm(actor, name).await
    }

    async fn halt(&self, actor: &ActorRef) -> Result<(), Error> {
        self.host.halt(actor).await
    }

    async fn halt_all(&self) -> Result<(), Error> {
        self.host.halt_all().await
    }
}
