//! The call chain: the actors an invocation passed through, carried with every call (across
//! hosts too), so a call that would enter an actor already waiting further up the chain is
//! refused at once instead of waiting for a turn that cannot end.

use std::sync::Arc;

use francis_core::{ActorRef, Error};

use crate::trace::TraceContext;

/// The actors a call passed through, first caller first, and the trace it belongs to. Empty
/// (and allocation-free) for a call from outside any turn. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CallChain {
    links: Option<Arc<[ActorRef]>>,
    /// The trace of the call, and the span that made it.
    trace: Option<TraceContext>,
}

impl CallChain {
    /// This chain, then `actor`: the chain of the calls a turn of `actor` makes.
    pub(crate) fn then(&self, actor: &ActorRef) -> CallChain {
        let mut links = self.links().to_vec();
        links.push(actor.clone());
        CallChain::from_links(links).traced(self.trace)
    }

    /// The actors, first caller first.
    pub(crate) fn links(&self) -> &[ActorRef] {
        self.links.as_deref().unwrap_or(&[])
    }

    /// The trace of the call, if it has one yet.
    pub(crate) fn trace(&self) -> Option<TraceContext> {
        self.trace
    }

    /// This chain, in `trace` (made by its span).
    pub(crate) fn traced(mut self, trace: Option<TraceContext>) -> CallChain {
        self.trace = trace;
        self
    }

    /// Whether no actor is in it.
    pub(crate) fn is_empty(&self) -> bool {
        self.links().is_empty()
    }

    /// A chain from its links.
    pub(crate) fn from_links(links: Vec<ActorRef>) -> CallChain {
        CallChain {
            links: (!links.is_empty()).then(|| links.into()),
            trace: None,
        }
    }

    /// Refuses a call to `target` that would re-enter an actor of this chain.
    pub(crate) fn check(&self, target: &ActorRef) -> Result<(), Error> {
        crate::policy::check_reentry(self.links(), target)
    }
}
