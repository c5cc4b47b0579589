//! The host's implementation of `ActorService`.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use francis_core::{
    ActorRef, ActorService, AlarmProperties, Envelope, Error, ErrorKind, ListStatesOptions,
    SetStateOptions, StateItem, StatePage, validate_alarm_name, validate_method, validate_name,
};
use francis_store::Fence;
use francis_store::Placement;
use tracing::Instrument;

use crate::chain::CallChain;
use crate::events::DeactivationReason;
use crate::peer::PeerLink;
use crate::policy::{Delivery, RouteRetry, route_retry};
use crate::replica::Replica;
use crate::routing::{Route, Router};
use crate::runtime::{Activations, Op};
use crate::trace::TraceContext;

/// The answer of an invocation, with the host that ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoked {
    /// What the actor returned.
    pub output: Option<Envelope>,
    /// The advertised address of the host that ran the actor.
    pub served_by: String,
}

/// A routed call's answer; `served_by` is `None` when this host ran it (its address is only
/// copied out for callers who ask, [`HostService::invoke_traced`]).
#[derive(Debug)]
pub(crate) struct Routed {
    pub output: Option<Envelope>,
    pub served_by: Option<String>,
}

impl Routed {
    fn invoked(self, here: &str) -> Invoked {
        Invoked {
            output: self.output,
            served_by: self.served_by.unwrap_or_else(|| here.to_owned()),
        }
    }
}

/// One host: its activations, where it believes actors live, its link to the other hosts, and
/// the replicated store it takes part in. What the public service and the lifecycle loops
/// share; the layers below it each own their part.
pub(crate) struct HostInner {
    /// The activation layer (table, turns, types, lease, health).
    pub act: Arc<Activations>,
    /// Where actors live, as far as this host knows.
    pub router: Router,
    /// The peer link: started by `run` when runtime PSKs are configured.
    pub peer: PeerLink,
    /// The replicated store this host takes part in, if any (also its store's provider).
    pub replica: Option<Replica>,
}

impl HostInner {
    /// Puts the layers together: turns other hosts send reach the activations. (How turns
    /// reach other actors is set by the host, which sits above this layer.)
    pub fn new(act: Activations, peer: PeerLink, replica: Option<Replica>) -> Arc<Self> {
        // Routing times its cache and membership view on the host's one clock.
        let router = Router::new(act.store.clock.clone());
        let inner = Arc::new(HostInner {
            act: Arc::new(act),
            router,
            peer,
            replica,
        });
        inner.peer.attach(&inner.act);
        inner
    }
}

/// The service of one host: invoke actors, manage their state and alarms, halt them.
///
/// Cheap to clone. Every call validates the reference, refuses reserved types and methods, and
/// fails with a retryable error while the host is not serving (starting, draining, fenced).
#[derive(Clone)]
pub struct HostService {
    inner: Arc<HostInner>,
    /// The trace calls from outside join ([`HostService::traced`]); a new one per call when
    /// `None`.
    trace: Option<TraceContext>,
}

impl std::fmt::Debug for HostService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostService")
            .field("address", &self.inner.act.address)
            .finish_non_exhaustive()
    }
}

impl HostService {
    pub(crate) fn new(inner: Arc<HostInner>) -> Self {
        HostService { inner, trace: None }
    }

    /// This service, with the calls it makes from outside any actor joining `trace` as
    /// children of its span (the worker passes the HTTP request's `traceparent` this way). The
    /// calls' `francis.invoke` spans, and their turns' `francis.turn` spans on whichever host,
    /// record its trace id.
    pub fn traced(&self, trace: TraceContext) -> HostService {
        HostService {
            inner: self.inner.clone(),
            trace: Some(trace),
        }
    }

    /// The advertised address of this host.
    pub fn host_address(&self) -> &str {
        &self.inner.act.address
    }

    fn check(&self, actor: &ActorRef) -> Result<(), Error> {
        actor.check_not_reserved()?;
        self.inner.act.check_serving()
    }

    /// Runs `op` on this host's activation of the actor, bounded by the invoke timeout.
    async fn call_local(
        &self,
        actor: &ActorRef,
        op: Op,
        request_id: String,
        claimed: Option<crate::state::Claim>,
    ) -> Result<Routed, Error> {
        let output = self.inner.act.call(actor, op, request_id, claimed).await?;
        Ok(Routed {
            output,
            served_by: None,
        })
    }

    /// Runs `op` wherever the actor lives: here, or on its owner over the peer transport. A
    /// stale route ("not hosted", "shutting down"), or a send that certainly never reached the
    /// owner (another host now answers at its address), drops the route and tries once more
    /// with the same request id ([`route_retry`]). A send whose answer was lost goes once more
    /// to the same owner, which remembers the request id and does not run it twice.
    pub(crate) async fn route_op(
        &self,
        actor: &ActorRef,
        op: Op,
        request_id: String,
    ) -> Result<Routed, Error> {
        let mut sent = 0u32;
        let mut same_owner: Option<Placement> = None;
        loop {
            let route = match same_owner.take() {
                Some(owner) => Route::Remote(owner),
                None => self.inner.router.route(&self.inner.act, actor).await?,
            };
            sent += 1;
            let (result, delivery, owner) = match route {
                Route::Local(claimed) => {
                    let result = self
                        .call_local(actor, op.clone(), request_id.clone(), claimed)
                        .await;
                    (result, Delivery::Answered, None)
                }
                Route::Remote(owner) => {
                    if let Some(e) = self
                        .inner
                        .router
                        .unresponsive(&self.inner.act, &owner.host_id)
                        .await
                    {
                        return Err(e);
                    }
                    // Boxed, so the future of every call (local ones too) stays small.
                    let outcome = Box::pin(async {
                        tokio::select! {
                            outcome = self.send(&owner, actor, op.clone(), &request_id) => outcome,
                            () = self.inner.router.lost(&self.inner.act, &owner.host_id) => {
                                Err((Error::HostUnavailable(format!(
                                    "host {} at {} lost its lease while handling the call to \
                                     {actor}; the call may or may not have run",
                                    owner.host_id, owner.address
                                )), Delivery::Answered))
                            }
                        }
                    })
                    .await;
                    match outcome {
                        Ok(invoked) => return Ok(invoked),
                        Err((e, delivery)) => {
                            match (e.kind(), delivery) {
                                // The owner left, or another host answers at its address:
                                // none of its routes hold any more.
                                (ErrorKind::ShuttingDown, _)
                                | (ErrorKind::Transport, Delivery::NotDelivered) => {
                                    self.inner.router.forget_host(&owner.host_id)
                                }
                                (_, Delivery::Unresponsive) => {
                                    self.inner.router.mark_unresponsive(&owner.host_id)
                                }
                                _ => self.inner.router.forget(actor),
                            }
                            (Err(e), delivery, Some(owner))
                        }
                    }
                }
            };
            let Err(e) = result else {
                return result;
            };
            match route_retry(e.kind(), delivery, sent, true) {
                RouteRetry::GiveUp => return Err(e),
                RouteRetry::Reresolve => self.inner.router.forget(actor),
                RouteRetry::SameOwner => same_owner = owner,
            }
        }
    }

    /// Sends `op` to the host that owns the actor; a failure says how far the call got.
    async fn send(
        &self,
        owner: &Placement,
        actor: &ActorRef,
        op: Op,
        request_id: &str,
    ) -> Result<Routed, (Error, Delivery)> {
        let not_delivered = |e: Error| (e, Delivery::NotDelivered);
        let transport = self.inner.peer.transport().ok_or_else(|| {
            not_delivered(Error::HostUnavailable(format!(
                "actor {actor} lives on host {} at {}, but this host has no peer transport \
                 (no runtime PSK configured)",
                owner.host_id, owner.address
            )))
        })?;
        let peer = crate::peer::resolve_address(&owner.address)
            .await
            .map_err(not_delivered)?;
        let invoke = crate::peer::to_wire(actor, op, request_id.to_owned());
        let output = crate::peer::invoke(&transport, peer, &owner.host_id, invoke).await?;
        Ok(Routed {
            output: output
                .map(Envelope::from_json)
                .transpose()
                .map_err(|e| (e, Delivery::Answered))?,
            served_by: Some(owner.address.clone()),
        })
    }

    /// Checks and runs an invocation (`read_only`: a peek), routed to the actor's owner.
    pub(crate) async fn dispatch(
        &self,
        actor: &ActorRef,
        method: &str,
        data: Envelope,
        read_only: bool,
        request_id: String,
        chain: CallChain,
    ) -> Result<Routed, Error> {
        self.check(actor)?;
        validate_method(method)?;
        crate::policy::check_payload_size(
            data.as_bytes().len(),
            francis_transport::DEFAULT_MAX_MESSAGE_SIZE,
        )?;
        // The call's own span: a child of the calling turn's (or of the trace this service
        // joins), or the root of a new trace.
        let parent = chain.trace().or(self.trace);
        let trace = parent.map_or_else(TraceContext::new_root, |p| p.child());
        let span = tracing::info_span!(
            "francis.invoke",
            actor_type = actor.actor_type(),
            actor_id = actor.actor_id(),
            method,
            read_only,
            host = %self.inner.act.address,
            trace_id = %trace.trace_id(),
            span_id = %trace.span_id(),
            parent_span_id = parent.map(|p| p.span_id()).map(tracing::field::display),
            outcome = tracing::field::Empty,
        );
        let chain = chain.traced(Some(trace));
        let method = method.to_owned();
        let op = if read_only {
            Op::Peek {
                method,
                data,
                chain,
            }
        } else {
            Op::Invoke {
                method,
                data,
                chain,
            }
        };
        let result = self
            .route_op(actor, op, request_id)
            .instrument(span.clone())
            .await;
        span.record("outcome", crate::runtime::outcome_code(&result));
        result
    }

    /// A call from outside any actor (a fresh request id, an empty call chain).
    async fn call_from_outside(
        &self,
        actor: &ActorRef,
        method: &str,
        data: Envelope,
        read_only: bool,
    ) -> Result<Routed, Error> {
        let chain = CallChain::default();
        self.dispatch(actor, method, data, read_only, new_request_id(), chain)
            .await
    }

    /// [`ActorService::invoke`], also saying which host ran the actor.
    pub async fn invoke_traced(
        &self,
        actor: &ActorRef,
        method: &str,
        data: Envelope,
    ) -> Result<Invoked, Error> {
        self.call_from_outside(actor, method, data, false)
            .await
            .map(|r| r.invoked(&self.inner.act.address))
    }

    /// [`ActorService::peek`], also saying which host ran the actor.
    pub async fn peek_traced(
        &self,
        actor: &ActorRef,
        method: &str,
        data: Envelope,
    ) -> Result<Invoked, Error> {
        self.call_from_outside(actor, method, data, true)
            .await
            .map(|r| r.invoked(&self.inner.act.address))
    }

    /// Sends an invocation (`read_only`: a peek) to the host `peer_host_id` at `peer` over the
    /// peer transport, and returns its answer or its error with the kind it had there.
    /// The peer's certificate must name `peer_host_id`, or the call fails with a retryable
    /// transport error. Routing (which host to call) is the caller's choice here.
    pub async fn invoke_on(
        &self,
        peer: SocketAddr,
        peer_host_id: &str,
        actor: &ActorRef,
        method: &str,
        data: Envelope,
        read_only: bool,
    ) -> Result<Invoked, Error> {
        actor.check_not_reserved()?;
        validate_method(method)?;
        crate::policy::check_payload_size(
            data.as_bytes().len(),
            francis_transport::DEFAULT_MAX_MESSAGE_SIZE,
        )?;
        let transport = self.inner.peer.transport().ok_or_else(|| {
            Error::HostUnavailable(
                "the peer transport is not running (no runtime PSK, or the host is not running)"
                    .into(),
            )
        })?;
        let method = method.to_owned();
        let chain = CallChain::default();
        let op = if read_only {
            Op::Peek {
                method,
                data,
                chain,
            }
        } else {
            Op::Invoke {
                method,
                data,
                chain,
            }
        };
        let invoke = crate::peer::to_wire(actor, op, new_request_id());
        let output = transport.invoke(peer, peer_host_id, invoke).await?;
        Ok(Invoked {
            output: output.map(Envelope::from_json).transpose()?,
            served_by: peer.to_string(),
        })
    }

    /// The replicated store's view (role, leader, members, unreachable peers), when this host
    /// takes part in one.
    #[cfg(feature = "replication")]
    pub fn replication_status(&self) -> Option<francis_replication::ReplicationStatus> {
        self.inner.replica.as_ref().map(|r| r.status())
    }

    /// Adds the host whose peer address is `address` to the replicated store's voters (it must
    /// be running with this cluster's PSK; the leader first brings it up to date). A host
    /// started with the cluster in its peers does this by itself; this is for operators.
    ///
    /// Fails with [`Error::InvalidArgument`] when this host's store is not replicated.
    #[cfg(feature = "replication")]
    pub async fn add_member(&self, address: &str) -> Result<(), Error> {
        let replica = self.replica("add a member")?;
        crate::policy::check_member_address(address)?;
        Ok(replica.add_member(address).await?)
    }

    /// Removes the host whose peer address is `address` from the replicated store's voters, for
    /// good: for a host that died and will not come back, so the cluster no longer needs it for
    /// a majority. A removed host that starts again with the cluster in its peers asks to be
    /// added back.
    ///
    /// Fails with [`Error::InvalidArgument`] when this host's store is not replicated, or
    /// `address` is not a member (the message lists the members); with a retryable error when
    /// there is no quorum to agree on the change.
    #[cfg(feature = "replication")]
    pub async fn remove_member(&self, address: &str) -> Result<(), Error> {
        let replica = self.replica("remove a member")?;
        crate::policy::check_member_address(address)?;
        let members = replica.status().members;
        if !members.iter().any(|m| m == address) {
            return Err(Error::InvalidArgument {
                field: "address".into(),
                message: format!(
                    "{address} is not a member of the replicated store (members: {})",
                    members.join(", ")
                ),
            });
        }
        Ok(replica.remove_member(address).await?)
    }

    #[cfg(feature = "replication")]
    fn replica(&self, what: &str) -> Result<&crate::replica::Replica, Error> {
        self.inner.replica.as_ref().ok_or_else(|| Error::InvalidArgument {
            field: "store".into(),
            message: format!(
                "cannot {what}: this host's store is not replicated (it was started without peers)"
            ),
        })
    }

    /// Whether this host serves calls now (see [`crate::LocalHost::health`]): never `Serving`
    /// once its lease has lapsed by its own monotonic clock.
    pub fn health(&self) -> crate::Health {
        self.inner.act.current_health()
    }

    /// How many turns sent by other hosts were not run because one under the same request id
    /// ran, or was running, here (a resend after a lost answer): for diagnostics and tests.
    #[doc(hidden)]
    pub fn resends_recognised(&self) -> u64 {
        self.inner.act.recent.joined()
    }

    /// The actors active on this host.
    pub fn active_actors(&self) -> Vec<ActorRef> {
        let mut actors: Vec<_> = self
            .inner
            .act
            .all_active()
            .iter()
            .map(|a| a.actor.clone())
            .collect();
        actors.sort();
        actors
    }
}

/// So a typed handle can take the service by value: `Counter::handle(host.service(), "c")`.
impl francis_core::IntoService for HostService {
    fn into_service(self) -> francis_core::Service {
        Arc::new(self)
    }
}

#[async_trait]
impl ActorService for HostService {
    async fn invoke(
        &self,
        actor: &ActorRef,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        self.call_from_outside(actor, method, data, false)
            .await
            .map(|r| r.output)
    }

    async fn peek(
        &self,
        actor: &ActorRef,
        method: &str,
        data: Envelope,
    ) -> Result<Option<Envelope>, Error> {
        self.call_from_outside(actor, method, data, true)
            .await
            .map(|r| r.output)
    }

    async fn get_state(&self, actor: &ActorRef) -> Result<Envelope, Error> {
        self.check(actor)?;
        let store = &self.inner.act.store;
        let record = store
            .call(store.provider.get_state(actor, store.clock.now()))
            .await?;
        match record {
            Some(r) => Envelope::from_json(r.data),
            None => Err(Error::StateNotFound(actor.clone())),
        }
    }

    async fn set_state(
        &self,
        actor: &ActorRef,
        value: Envelope,
        options: SetStateOptions,
    ) -> Result<(), Error> {
        self.check(actor)?;
        self.route_op(actor, Op::SetState { value, options }, new_request_id())
            .await
            .map(|_| ())
    }

    async fn delete_state(&self, actor: &ActorRef) -> Result<(), Error> {
        self.check(actor)?;
        self.route_op(actor, Op::DeleteState, new_request_id())
            .await
            .map(|_| ())
    }

    async fn list_states(
        &self,
        actor_type: &str,
        options: ListStatesOptions,
    ) -> Result<StatePage, Error> {
        validate_name("actor type", actor_type)?;
        if actor_type.starts_with(francis_core::RESERVED_PREFIX) {
            return Err(Error::ActorTypeReserved(actor_type.to_owned()));
        }
        self.inner.act.check_serving()?;
        let limit = options.effective_limit()?;
        let store = &self.inner.act.store;
        let page = store
            .call(store.provider.list_states(
                actor_type,
                options.after.as_deref(),
                limit,
                options.include_data,
                store.clock.now(),
            ))
            .await?;
        let items = page
            .items
            .into_iter()
            .map(|item| {
                Ok(StateItem {
                    actor_id: item.actor_id,
                    data: item.data.map(Envelope::from_json).transpose()?,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(StatePage {
            items,
            next: page.next,
        })
    }

    async fn set_alarm(
        &self,
        actor: &ActorRef,
        name: &str,
        properties: AlarmProperties,
    ) -> Result<(), Error> {
        self.check(actor)?;
        validate_alarm_name(name)?;
        properties.validate()?;
        if self.inner.act.type_entry(actor.actor_type()).is_err() {
            let view = self.inner.router.membership(&self.inner.act, false).await?;
            if view.serving(actor.actor_type()).next().is_none() {
                // Read the store again before saying nobody serves the type.
                let view = self.inner.router.membership(&self.inner.act, true).await?;
                if view.serving(actor.actor_type()).next().is_none() {
                    return Err(Error::ActorTypeUnsupported(actor.actor_type().to_owned()));
                }
            }
        }
        let store = &self.inner.act.store;
        store
            .call(
                store
                    .provider
                    .set_alarm(actor, name, &properties, Fence::Unfenced),
            )
            .await
    }

    async fn get_alarm(&self, actor: &ActorRef, name: &str) -> Result<AlarmProperties, Error> {
        self.check(actor)?;
        validate_alarm_name(name)?;
        let store = &self.inner.act.store;
        store
            .call(store.provider.get_alarm(actor, name))
            .await?
            .ok_or_else(|| Error::AlarmNotFound {
                actor: actor.clone(),
                name: name.to_owned(),
            })
    }

    async fn delete_alarm(&self, actor: &ActorRef, name: &str) -> Result<(), Error> {
        self.check(actor)?;
        validate_alarm_name(name)?;
        let store = &self.inner.act.store;
        let existed = store
            .call(store.provider.delete_alarm(actor, name, Fence::Unfenced))
            .await?;
        if !existed {
            return Err(Error::AlarmNotFound {
                actor: actor.clone(),
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    async fn halt(&self, actor: &ActorRef) -> Result<(), Error> {
        actor.check_not_reserved()?;
        let act = self
            .inner
            .act
            .active(actor)
            .filter(|a| !a.halting.load(std::sync::atomic::Ordering::Acquire))
            .ok_or_else(|| Error::ActorNotHosted(actor.clone()))?;
        act.cancel.cancel();
        self.inner
            .act
            .begin_deactivation(&act, DeactivationReason::Halted);
        Ok(())
    }

    async fn halt_all(&self) -> Result<(), Error> {
        for act in self.inner.act.all_active() {
            act.cancel.cancel();
            self.inner
                .act
                .begin_deactivation(&act, DeactivationReason::Halted);
        }
        Ok(())
    }
}

/// A random (v4) UUID from the thread-local generator: one per call, so it must not cost a
/// `getrandom` system call each time (`Uuid::new_v4` does; it showed in `invoke-local`'s profile).
pub(crate) fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::new_request_id;

    #[test]
    fn request_ids_are_distinct_v4_uuids() {
        let a = uuid::Uuid::parse_str(&new_request_id()).unwrap();
        let b = uuid::Uuid::parse_str(&new_request_id()).unwrap();
        assert_eq!(a.get_version_num(), 4);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(a, b);
    }
}
