//! The call chain: the actors an invocation passed through, carried with every call (across
//! hosts too), so a call that would enter an actor already waiting further up the chain is
//! refused at once instead of waiting for a turn that cannot end.

use std::sync::Arc;

use async_trait::async_trait;
use francis_core::{
    ActorRef, ActorService, AlarmProperties, Envelope, Error, ListStatesOptions, SetStateOptions,
    StatePage,
};

use crate::service::HostService;

/// The actors a call passed through, first caller first. Empty for a call from outside any
/// turn. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CallChain(Arc<[ActorRef]>);

impl CallChain {
    /// The chain of the calls a turn of `actor` makes: this chain, then `actor`.
    pub(crate) fn then(&self, actor: &ActorRef) -> CallChain {
        let mut links = self.0.to_vec();
        links.push(actor.clone());
        CallChain(links.into())
    }

    /// The actors, first caller first.
    pub(crate) fn links(&self) -> &[ActorRef] {
        &self.0
    }

    /// A chain from its links.
    pub(crate) fn from_links(links: Vec<ActorRef>) -> CallChain {
        CallChain(links.into())
    }

    /// Refuses a call to `target` that would re-enter an actor of this chain.
    pub(crate) fn check(&self, target: &ActorRef) -> Result<(), Error> {
        crate::policy::check_reentry(&self.0, target)
    }
}

/// The service a turn hands its actor: every call it makes carries the turn's call chain.
#[derive(Debug)]
pub(crate) struct ChainedService {
    host: HostService,
    chain: CallChain,
}

impl ChainedService {
    /// The service for a turn whose calls carry `chain`.
    pub(crate) fn new(host: HostService, chain: CallChain) -> Self {
        ChainedService { host, chain }
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
        self.host
            .dispatch_in_chain(actor, method, data, false, &self.chain)
            .await
            .map(|i| i.output)
    }

    async fn peek(
        &self,
        actor: &ActorRef,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        self.host
            .dispatch_in_chain(actor, method, data, true, &self.chain)
            .await
            .map(|i| i.output)
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
        self.chain.check(actor)?;
        self.host.set_state(actor, value, options).await
    }

    async fn delete_state(&self, actor: &ActorRef) -> Result<(), Error> {
        self.chain.check(actor)?;
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
        self.host.set_alarm(actor, name, properties).await
    }

    async fn get_alarm(&self, actor: &ActorRef, name: &str) -> Result<AlarmProperties, Error> {
        self.host.get_alarm(actor, name).await
    }

    async fn delete_alarm(&self, actor: &ActorRef, name: &str) -> Result<(), Error> {
        self.host.delete_alarm(actor, name).await
    }

    async fn halt(&self, actor: &ActorRef) -> Result<(), Error> {
        self.host.halt(actor).await
    }

    async fn halt_all(&self) -> Result<(), Error> {
        self.host.halt_all().await
    }
}
