//! Store access shared by the runtime: timeouts, error mapping, and an activation's fenced
//! view of its own state and alarms.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use francis_core::{ActivationState, ActorRef, AlarmProperties, Envelope, Error, SetStateOptions};
use francis_store::{Fence, Provider, StoreResult};

use crate::clock::Clock;

/// The provider, the clock and the bound on every store call.
#[derive(Clone)]
pub(crate) struct StoreAccess {
    pub provider: Arc<dyn Provider>,
    pub clock: Arc<dyn Clock>,
    pub timeout: Duration,
}

impl StoreAccess {
    /// Runs one store call, bounded by the store timeout, mapping its error to a call error.
    pub async fn call<T>(&self, fut: impl Future<Output = StoreResult<T>>) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result.map_err(Error::from),
            Err(_) => Err(Error::Timeout {
                what: "store call".into(),
                after: self.timeout,
            }),
        }
    }
}

/// An activation's state and alarms; every write carries its placement epoch.
pub(crate) struct ActivationStore {
    pub access: StoreAccess,
    pub actor: ActorRef,
    pub epoch: u64,
    pub generation: AtomicU64,
}

impl ActivationStore {
    fn fence(&self) -> Fence {
        Fence::Epoch(self.epoch)
    }
}

#[async_trait]
impl ActivationState for ActivationStore {
    async fn load(&self) -> Result<Option<(Envelope, bool)>, Error> {
        let now = self.access.clock.now();
        let record = self
            .access
            .call(self.access.provider.get_state(&self.actor, now))
            .await?;
        match record {
            None => Ok(None),
            Some(r) => Ok(Some((Envelope::from_json(r.data)?, r.expires_at.is_some()))),
        }
    }

    async fn store(&self, value: Envelope, options: SetStateOptions) -> Result<(), Error> {
        let expires_at = match options.ttl {
            None => None,
            Some(ttl) => Some(
                self.access.clock.now()
                    + chrono::Duration::from_std(ttl).map_err(|_| {
                        Error::invalid_argument("ttl", format!("{ttl:?} is too long"))
                    })?,
            ),
        };
        let result = self
            .access
            .call(self.access.provider.set_state(
                &self.actor,
                value.as_bytes(),
                expires_at,
                self.fence(),
            ))
            .await;
        // Bump even on failure: the store may hold either version now, so caches must reload.
        self.generation.fetch_add(1, Ordering::AcqRel);
        result
    }

    async fn clear(&self) -> Result<(), Error> {
        let result = self
            .access
            .call(self.access.provider.delete_state(&self.actor, self.fence()))
            .await;
        self.generation.fetch_add(1, Ordering::AcqRel);
        result.map(|_| ())
    }

    async fn set_alarm(&self, name: &str, properties: AlarmProperties) -> Result<(), Error> {
        self.access
            .call(
                self.access
                    .provider
                    .set_alarm(&self.actor, name, &properties, self.fence()),
            )
            .await
    }

    async fn delete_alarm(&self, name: &str) -> Result<(), Error> {
        let existed = self
            .access
            .call(
                self.access
                    .provider
                    .delete_alarm(&self.actor, name, self.fence()),
            )
            .await?;
        if !existed {
            return Err(Error::AlarmNotFound {
                actor: self.actor.clone(),
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
