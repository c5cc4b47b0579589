//! The replicated store as the host sees it, with or without the `replication` feature.
//!
//! With the feature, [`Replica`] is `francis_replication::ReplicatedProvider` and
//! [`RaftHandler`] its request handler. Without it both are types with no values, so the
//! host's code paths for a replicated store compile to nothing and no Raft crate is built.

#[cfg(feature = "replication")]
pub(crate) use francis_replication::{
    RaftRequestHandler as RaftHandler, ReplicatedProvider as Replica,
};

#[cfg(not(feature = "replication"))]
mod absent {
    use francis_transport::RequestHandler;
    use francis_transport::proto::{Request, Response};

    /// No replicated store (the `replication` feature is off): has no values.
    #[derive(Debug, Clone)]
    pub(crate) enum Replica {}

    impl Replica {
        pub(crate) async fn shutdown(&self) {
            match *self {}
        }

        pub(crate) async fn leave(&self) -> francis_store::StoreResult<bool> {
            match *self {}
        }
    }

    /// No Raft request handler (the `replication` feature is off): has no values.
    #[derive(Debug, Clone)]
    pub(crate) enum RaftHandler {}

    #[async_trait::async_trait]
    impl RequestHandler for RaftHandler {
        async fn handle(&self, _peer_host_id: &str, _request: Request) -> Response {
            match *self {}
        }
    }
}

#[cfg(not(feature = "replication"))]
pub(crate) use absent::{RaftHandler, Replica};
