//! A typed, cached view of one actor's state.

use std::sync::Mutex;

use serde::{Serialize, de::DeserializeOwned};

use crate::actor::ActorContext;
use crate::envelope::Envelope;
use crate::error::Error;
use crate::reference::ActorRef;
use crate::service::SetStateOptions;

/// Typed access to one actor's durable state, for use inside that actor's turns.
///
/// - [`Client::get`] returns `T::default()` when no state is stored.
/// - Reads are cached for the activation; the cache is dropped whenever the state is changed
///   by anything other than this client (an outside `set_state` is routed through the
///   activation and bumps its generation), and never holds state that has a TTL.
/// - Mutations inside a `peek` turn fail with [`Error::ReadOnly`].
/// - Writes go straight to the store, fenced by the activation's placement epoch.
#[derive(Debug)]
pub struct Client<T> {
    actor: ActorRef,
    cache: Mutex<Option<(u64, T)>>,
}

impl<T> Client<T>
where
    T: Serialize + DeserializeOwned + Default + Clone + Send + Sync,
{
    /// A client bound to `actor`; using it from another actor's turn is an error.
    pub fn new(actor: ActorRef) -> Self {
        Client {
            actor,
            cache: Mutex::new(None),
        }
    }

    fn check_actor(&self, ctx: &ActorContext) -> Result<(), Error> {
        if ctx.actor() != &self.actor {
            return Err(Error::invalid_argument(
                "client",
                format!(
                    "state client of {} used in a turn of {}",
                    self.actor,
                    ctx.actor()
                ),
            ));
        }
        Ok(())
    }

    /// The current state, or `T::default()` when none is stored.
    pub async fn get(&self, ctx: &ActorContext) -> Result<T, Error> {
        self.check_actor(ctx)?;
        let generation = ctx.activation().generation();
        if let Some((g, v)) = &*self.cache.lock().expect("cache lock")
            && *g == generation
        {
            return Ok(v.clone());
        }
        let loaded = ctx.activation().load().await?;
        let (value, cacheable) = match loaded {
            Some((env, has_ttl)) => (env.decode::<T>()?, !has_ttl),
            None => (T::default(), true),
        };
        let mut cache = self.cache.lock().expect("cache lock");
        *cache = cacheable.then(|| (generation, value.clone()));
        Ok(value)
    }

    /// Replaces the state.
    pub async fn set(&self, ctx: &ActorContext, value: T) -> Result<(), Error> {
        self.set_with_options(ctx, value, SetStateOptions::default())
            .await
    }

    /// Replaces the state with options (a TTL).
    pub async fn set_with_options(
        &self,
        ctx: &ActorContext,
        value: T,
        options: SetStateOptions,
    ) -> Result<(), Error> {
        self.check_actor(ctx)?;
        ctx.check_writable()?;
        let has_ttl = options.ttl.is_some();
        let env = Envelope::encode(&value)?;
        // Drop the cache first: if the write fails half-way the next read goes to the store.
        *self.cache.lock().expect("cache lock") = None;
        ctx.activation().store(env, options).await?;
        if !has_ttl {
            *self.cache.lock().expect("cache lock") = Some((ctx.activation().generation(), value));
        }
        Ok(())
    }

    /// Deletes the state; the next `get` returns `T::default()`.
    pub async fn delete(&self, ctx: &ActorContext) -> Result<(), Error> {
        self.check_actor(ctx)?;
        ctx.check_writable()?;
        *self.cache.lock().expect("cache lock") = None;
        ctx.activation().clear().await?;
        *self.cache.lock().expect("cache lock") =
            Some((ctx.activation().generation(), T::default()));
        Ok(())
    }
}
