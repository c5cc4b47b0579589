//! Typed actors: what the [`actor`](crate::actor) attribute builds on.
//!
//! An `impl` block marked `#[actor]` declares an actor's methods as ordinary async methods with
//! typed arguments and results. From it come the [`Actor`] implementation (the dispatch from a
//! method name and a JSON payload) and a typed handle, so that `counter.add(5).await?` returns
//! the method's own result type and the actor's own error type. The wire underneath stays the
//! method name and JSON: untyped callers (the worker's HTTP API, [`ActorService::invoke`]) and
//! typed ones call the same actor.
//!
//! The payload of a call is its arguments as JSON: nothing (`null`) for none, the value itself
//! for one, an array for several. The answer is the method's `Ok` value as JSON. An `Err` of the
//! actor's own error type travels as an [`ErrorKind::Actor`](crate::ErrorKind::Actor) error
//! with the error's message and, in [`Error::detail`], the error value itself, so a typed caller
//! on any host gets the same value back as [`CallError::Actor`].

use std::fmt::{Debug, Display};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::actor::{Actor, ActorContext};
use crate::envelope::Envelope;
use crate::error::Error;
use crate::reference::ActorRef;
use crate::service::{ActorService, Service};

/// An actor whose methods are typed; implemented by the [`actor`](crate::actor) attribute.
pub trait TypedActor: Actor + Sized {
    /// The actor type name it is registered and addressed under (for example `"counter"`).
    const TYPE: &'static str;

    /// The typed handle: one async method per method of the actor.
    type Handle: Clone + Send + Sync + 'static;

    /// The handle of one actor, calling through `service`.
    fn handle_for(service: Service, actor: ActorRef) -> Self::Handle;

    /// The handle of the actor of this type with id `id`, calling through `service` (a host's
    /// service from outside, or [`ActorContext::service`] from inside another actor, which keeps
    /// the call chain). Fails with [`Error::InvalidReference`] for a malformed id.
    fn handle(service: impl IntoService, id: impl Into<String>) -> Result<Self::Handle, Error> {
        let actor = ActorRef::new(Self::TYPE, id)?;
        Ok(Self::handle_for(service.into_service(), actor))
    }
}

/// What a typed handle calls through: a [`Service`], or any service that can be cloned into one.
pub trait IntoService {
    /// The service, shared.
    fn into_service(self) -> Service;
}

impl IntoService for Service {
    fn into_service(self) -> Service {
        self
    }
}

impl IntoService for &Service {
    fn into_service(self) -> Service {
        Arc::clone(self)
    }
}

impl<S: ActorService + Clone> IntoService for &S {
    fn into_service(self) -> Service {
        Arc::new(self.clone())
    }
}

/// The error type of a typed actor's methods, and what its callers get back.
///
/// Implemented for [`Error`] itself (a method that fails only with Francis's errors; callers
/// get [`Error`]) and for every serializable error type with `Display` and `Debug` (callers
/// get [`CallError`] of it).
pub trait ActorError: Sized + Send + 'static {
    /// What a typed handle's call fails with.
    type Call: From<Error> + Send + 'static;

    /// The error as it leaves the actor.
    fn into_error(self) -> Error;

    /// A failed call as its typed caller sees it.
    fn call_error(error: Error) -> Self::Call;
}

impl ActorError for Error {
    type Call = Error;

    fn into_error(self) -> Error {
        self
    }

    fn call_error(error: Error) -> Error {
        error
    }
}

impl<E> ActorError for E
where
    E: Serialize + DeserializeOwned + Display + Debug + Send + 'static,
{
    type Call = CallError<E>;

    fn into_error(self) -> Error {
        match Envelope::encode(&self) {
            Ok(detail) => Error::ActorTyped {
                message: self.to_string(),
                detail,
            },
            Err(_) => Error::Actor(self.to_string()),
        }
    }

    fn call_error(error: Error) -> CallError<E> {
        CallError::from(error)
    }
}

impl<E> From<E> for Error
where
    E: Serialize + DeserializeOwned + Display + Debug + Send + 'static,
{
    /// The actor's own error, keeping its value: so a method that returns `Result<T, Error>`
    /// can fail with `Err(MyError::Closed)?`, and callers of a typed handle still get
    /// `MyError::Closed` back (with `#[actor(error = MyError)]`).
    ///
    /// This covers every serializable error type, `String` and numbers included (they become
    /// actor errors with that message); so a serializable type cannot have a `From` into
    /// [`Error`] of its own. Map with `.map_err(..)` for another conversion.
    fn from(error: E) -> Self {
        error.into_error()
    }
}

/// How a call to a typed actor whose error type is `E` fails: with the actor's own error, or
/// with one of Francis's (the actor could not be reached, the call timed out...).
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The method returned `Err` with this value (on whichever host the actor runs).
    #[error("{0}")]
    Actor(E),
    /// The call itself failed; [`Error::is_retryable`] says whether trying again can help.
    #[error(transparent)]
    Francis(Error),
}

impl<E> CallError<E> {
    /// The actor's own error, if that is what the call failed with.
    pub fn actor_error(&self) -> Option<&E> {
        match self {
            CallError::Actor(e) => Some(e),
            CallError::Francis(_) => None,
        }
    }

    /// Whether retrying the same call later may succeed: never for the actor's own error.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Actor(_) => false,
            CallError::Francis(e) => e.is_retryable(),
        }
    }
}

impl<E: DeserializeOwned> From<Error> for CallError<E> {
    /// The actor's own error when `error` carries a value of `E`, else the error as it is.
    fn from(error: Error) -> Self {
        let typed = error
            .detail()
            .filter(|_| error.kind() == crate::ErrorKind::Actor)
            .and_then(|detail| detail.decode::<E>().ok());
        match typed {
            Some(e) => CallError::Actor(e),
            None => CallError::Francis(error),
        }
    }
}

impl<E: ActorError> From<CallError<E>> for Error {
    /// Passes a failed call on from inside an actor whose methods fail with [`Error`]: the
    /// other actor's own error keeps its value.
    fn from(error: CallError<E>) -> Self {
        match error {
            CallError::Actor(e) => e.into_error(),
            CallError::Francis(e) => e,
        }
    }
}

/// The answer of a typed method, as the dispatch sends it back.
#[doc(hidden)]
pub fn reply<T: Serialize, E: ActorError>(result: Result<T, E>) -> Result<Option<Envelope>, Error> {
    match result {
        Ok(value) => Envelope::encode(&value).map(Some),
        Err(e) => Err(e.into_error()),
    }
}

/// The result of an alarm or deactivation hook, as the runtime takes it.
#[doc(hidden)]
pub fn hook<E: ActorError>(result: Result<(), E>) -> Result<(), Error> {
    result.map_err(E::into_error)
}

/// A method the dispatch does not know.
#[doc(hidden)]
pub fn unknown_method(ctx: &ActorContext, entry: &'static str, method: &str) -> Error {
    Error::MethodNotImplemented {
        actor: ctx.actor().clone(),
        entry,
        method: method.to_owned(),
    }
}

/// One call of a typed handle: encode the arguments, invoke (or peek), decode the answer.
#[doc(hidden)]
pub async fn call<T, E>(
    service: &Service,
    actor: &ActorRef,
    method: &str,
    read_only: bool,
    args: Result<Envelope, Error>,
) -> Result<T, E::Call>
where
    T: DeserializeOwned,
    E: ActorError,
{
    let args = args.map_err(E::call_error)?;
    let answer = if read_only {
        service.peek(actor, method, args).await
    } else {
        service.invoke(actor, method, args).await
    }
    .map_err(E::call_error)?;
    answer
        .unwrap_or_else(Envelope::null)
        .decode::<T>()
        .map_err(E::call_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
    enum BankError {
        #[error("only {available} available")]
        Insufficient { available: i64 },
        #[error("account closed")]
        Closed,
    }

    #[test]
    fn an_actor_error_keeps_its_value_and_message() {
        let e = BankError::Insufficient { available: 3 }.into_error();
        assert_eq!(e.kind(), crate::ErrorKind::Actor);
        assert_eq!(e.to_string(), "only 3 available");
        assert!(!e.is_retryable());
        let back = CallError::<BankError>::from(e);
        assert_eq!(
            back.actor_error(),
            Some(&BankError::Insufficient { available: 3 })
        );
        assert!(!back.is_retryable());
    }

    #[test]
    fn the_value_survives_the_wire_as_a_remote_error() {
        let e = BankError::Closed.into_error();
        let remote = Error::from_wire(e.code(), e.to_string(), e.retry_after())
            .with_detail(e.detail().cloned());
        let back = CallError::<BankError>::from(remote);
        assert_eq!(back.actor_error(), Some(&BankError::Closed));
    }

    #[test]
    fn other_errors_stay_francis_errors() {
        // Not the actor's kind: a detail of the right shape does not make it the actor's error.
        let timeout = Error::Timeout {
            what: "invoke".into(),
            after: std::time::Duration::from_secs(1),
        };
        assert!(matches!(
            CallError::<BankError>::from(timeout),
            CallError::Francis(Error::Timeout { .. })
        ));
        // The actor's kind with a detail of another type (an untyped actor's, or a newer
        // version's) is passed on as it came.
        let other = Error::from_wire("actor_error", "boom".into(), None)
            .with_detail(Some(Envelope::encode(&42).unwrap()));
        let back = CallError::<BankError>::from(other);
        assert!(matches!(back, CallError::Francis(ref e) if e.to_string() == "boom"));
        assert!(!back.is_retryable());
        let untyped = CallError::<BankError>::from(Error::actor("plain"));
        assert!(untyped.actor_error().is_none());
    }

    #[test]
    fn a_call_error_passes_on_as_an_error_with_its_value() {
        let e: Error = CallError::Actor(BankError::Closed).into();
        assert_eq!(e.kind(), crate::ErrorKind::Actor);
        assert_eq!(
            e.detail().unwrap().decode::<BankError>().unwrap(),
            BankError::Closed
        );
        let e: Error = CallError::<BankError>::Francis(Error::ShuttingDown).into();
        assert!(matches!(e, Error::ShuttingDown));
    }

    #[test]
    fn an_own_error_converts_into_an_error_with_question_mark() {
        fn fails() -> Result<(), Error> {
            Err(BankError::Closed)?;
            Ok(())
        }
        let e = fails().unwrap_err();
        assert_eq!(e.to_string(), "account closed");
        assert_eq!(
            CallError::<BankError>::from(e).actor_error(),
            Some(&BankError::Closed)
        );
    }

    #[test]
    fn replies_encode_the_value_or_the_error() {
        let ok = reply::<_, BankError>(Ok(7)).unwrap().unwrap();
        assert_eq!(ok.decode::<i64>().unwrap(), 7);
        let err = reply::<i64, BankError>(Err(BankError::Closed)).unwrap_err();
        assert_eq!(err.to_string(), "account closed");
        let plain = reply::<i64, Error>(Err(Error::ReadOnly)).unwrap_err();
        assert!(matches!(plain, Error::ReadOnly));
    }
}
