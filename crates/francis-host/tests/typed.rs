//! Typed actors (`#[actor]`) on real hosts: typed calls from outside and from another actor,
//! the actor's own error carried across hosts with its value, untyped callers of the same
//! methods, and the alarm and deactivation hooks.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use francis_core::{
    ActorContext, ActorInit, ActorService, AlarmProperties, CallError, Client, Envelope, Error,
    ErrorKind, TypedActor, actor,
};
use francis_host::{ActorOptions, LocalHost};
use serde::{Deserialize, Serialize};
use support::{cluster_options, host_on, until};

#[derive(Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
enum AccountError {
    #[error("insufficient funds: {available} available")]
    Insufficient { available: i64 },
    #[error("amounts are positive, not {0}")]
    NotPositive(i64),
    #[error("the account is closed")]
    Closed,
}

#[derive(Default, Clone, Serialize, Deserialize)]
struct Books {
    balance: i64,
    closed: bool,
}

struct Account {
    books: Client<Books>,
}

#[actor(error = AccountError)]
impl Account {
    /// Adds `amount`; answers the new balance.
    pub async fn deposit(&mut self, ctx: &ActorContext, amount: i64) -> Result<i64, Error> {
        if amount <= 0 {
            Err(AccountError::NotPositive(amount))?;
        }
        let mut books = self.books.get(ctx).await?;
        if books.closed {
            Err(AccountError::Closed)?;
        }
        books.balance += amount;
        self.books.set(ctx, books.clone()).await?;
        Ok(books.balance)
    }

    /// Takes `amount` out; answers the new balance.
    pub async fn withdraw(&mut self, ctx: &ActorContext, amount: i64) -> Result<i64, Error> {
        if amount <= 0 {
            Err(AccountError::NotPositive(amount))?;
        }
        let mut books = self.books.get(ctx).await?;
        if books.balance < amount {
            Err(AccountError::Insufficient {
                available: books.balance,
            })?;
        }
        books.balance -= amount;
        self.books.set(ctx, books.clone()).await?;
        Ok(books.balance)
    }

    /// Refuses deposits from now on.
    pub async fn close(&mut self, ctx: &ActorContext) -> Result<(), Error> {
        let mut books = self.books.get(ctx).await?;
        books.closed = true;
        self.books.set(ctx, books).await
    }

    /// The balance, in a shared turn.
    #[peek]
    pub async fn balance(&self, ctx: &ActorContext) -> Result<i64, Error> {
        Ok(self.books.get(ctx).await?.balance)
    }
}

/// Moves money between accounts with typed calls from inside its turn.
struct Bank;

#[actor(error = AccountError)]
impl Bank {
    /// Moves `amount` from `from` to `to`; answers both new balances. A deposit that fails puts
    /// the money back.
    pub async fn transfer(
        &mut self,
        ctx: &ActorContext,
        from: String,
        to: String,
        amount: i64,
    ) -> Result<(i64, i64), Error> {
        let source = Account::handle(ctx.service(), from)?;
        let target = Account::handle(ctx.service(), to)?;
        let left = source.withdraw(amount).await?;
        match target.deposit(amount).await {
            Ok(arrived) => Ok((left, arrived)),
            Err(e) => {
                source.deposit(amount).await?;
                Err(e.into())
            }
        }
    }
}

fn accounts(host: &LocalHost) {
    host.register::<Account>(
        |init: ActorInit| Account {
            books: Client::new(init.actor),
        },
        cluster_options(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls_cross_hosts_with_the_actor_s_own_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    // Only B serves accounts and only A serves the bank: every account call of the bank, and
    // every call below through A, crosses the peer transport.
    let a = host_on(&path, |h| {
        h.register::<Bank>(|_| Bank, cluster_options()).unwrap();
    })
    .await;
    let b = host_on(&path, accounts).await;
    let via_a = a.host.service();
    assert_eq!(Account::TYPE, "account");

    let alice = Account::handle(&via_a, "alice").unwrap();
    let bob = Account::handle(&via_a, "bob").unwrap();
    // A host learns of a new peer's actor types from the store's membership: poll until A
    // routes accounts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let first = loop {
        match alice.deposit(100).await {
            Ok(n) => break n,
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("deposit: {e}"),
        }
    };
    assert_eq!(first, 100);
    assert_eq!(bob.deposit(5).await.unwrap(), 5);

    // The actor's own error arrives as its value, from another host.
    match alice.withdraw(1_000).await {
        Err(CallError::Actor(AccountError::Insufficient { available })) => {
            assert_eq!(available, 100)
        }
        other => panic!("expected Insufficient, got {other:?}"),
    }
    assert!(matches!(
        bob.deposit(-3).await,
        Err(CallError::Actor(AccountError::NotPositive(-3)))
    ));

    // Actor-to-actor: the bank (on A) calls both accounts (on B) with typed handles.
    let bank = Bank::handle(&via_a, "main").unwrap();
    assert_eq!(
        bank.transfer("alice".into(), "bob".into(), 30)
            .await
            .unwrap(),
        (70, 35)
    );
    // The error path: the withdrawal is refused, its value reaches the bank's caller, and both
    // balances are as they were.
    match bank.transfer("bob".into(), "alice".into(), 500).await {
        Err(CallError::Actor(AccountError::Insufficient { available })) => {
            assert_eq!(available, 35)
        }
        other => panic!("expected Insufficient, got {other:?}"),
    }
    // A refused deposit puts the money back.
    let carol = Account::handle(&via_a, "carol").unwrap();
    carol.close().await.unwrap();
    assert!(matches!(
        bank.transfer("alice".into(), "carol".into(), 10).await,
        Err(CallError::Actor(AccountError::Closed))
    ));
    assert_eq!(carol.balance().await.unwrap(), 0);
    assert_eq!(alice.balance().await.unwrap(), 70);
    assert_eq!(bob.balance().await.unwrap(), 35);

    // Untyped callers reach the same methods: one argument is the value itself, several an
    // array; the actor's error keeps its kind and carries its value.
    let bank_ref = francis_core::ActorRef::new(Bank::TYPE, "main").unwrap();
    let answer = via_a
        .invoke(
            &bank_ref,
            "transfer",
            Envelope::encode(&("bob", "alice", 5)).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.decode::<(i64, i64)>().unwrap(), (30, 75));
    let alice_ref = francis_core::ActorRef::new(Account::TYPE, "alice").unwrap();
    let e = via_a
        .invoke(&alice_ref, "withdraw", Envelope::encode(&1_000).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Actor);
    assert_eq!(e.to_string(), "insufficient funds: 75 available");
    assert_eq!(
        e.detail().unwrap().decode::<AccountError>().unwrap(),
        AccountError::Insufficient { available: 75 }
    );
    // A payload of the wrong shape is a decode error, and nothing changes.
    let e = via_a
        .invoke(&alice_ref, "deposit", Envelope::encode(&"ten").unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    // A peek reaches only read-only methods; a misspelt method is refused by name.
    let e = via_a
        .peek(&alice_ref, "withdraw", Envelope::encode(&1).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MethodNotImplemented);
    let e = via_a
        .invoke(&alice_ref, "withdrawl", Envelope::encode(&1).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MethodNotImplemented);
    assert_eq!(alice.balance().await.unwrap(), 75);

    a.stop().await;
    b.stop().await;
}

/// Counts alarm firings and deactivations of every activation.
#[derive(Default)]
struct Seen {
    alarms: AtomicUsize,
    deactivations: AtomicUsize,
}

struct Reminder {
    seen: Arc<Seen>,
}

#[actor(name = "reminder")]
impl Reminder {
    /// Sets an alarm due at once; answers nothing.
    pub async fn remind(&mut self, ctx: &ActorContext) -> Result<(), Error> {
        ctx.set_alarm("ping", AlarmProperties::after(Duration::ZERO))
            .await
    }

    /// How many alarms fired (infallible methods answer their value).
    #[peek]
    pub async fn fired(&self) -> usize {
        self.seen.alarms.load(Ordering::SeqCst)
    }

    #[alarm]
    async fn on_alarm(
        &mut self,
        _ctx: &ActorContext,
        name: &str,
        _data: Option<Envelope>,
    ) -> Result<(), Error> {
        assert_eq!(name, "ping");
        self.seen.alarms.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[deactivate]
    async fn on_deactivate(&mut self, _ctx: &ActorContext) -> Result<(), Error> {
        self.seen.deactivations.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_and_deactivation_hooks_run() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Seen::default());
    let host = host_on(&dir.path().join("one.db"), |h| {
        let seen = seen.clone();
        h.register::<Reminder>(
            move |_| Reminder { seen: seen.clone() },
            ActorOptions::default(),
        )
        .unwrap();
    })
    .await;
    let reminder = Reminder::handle(host.host.service(), "r").unwrap();
    reminder.remind().await.unwrap();
    until("the alarm fired", Duration::from_secs(10), || {
        seen.alarms.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(reminder.fired().await.unwrap(), 1);
    assert_eq!(seen.deactivations.load(Ordering::SeqCst), 0);
    host.stop().await;
    assert_eq!(seen.deactivations.load(Ordering::SeqCst), 1);
}

/// An actor whose signatures use what plain Rust allows: names with underscores, a raw
/// identifier, `Self`, and a method compiled out with `#[cfg]`.
#[derive(Default, Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Pair {
    first: i64,
    second: i64,
    kind: String,
}

#[actor]
impl Pair {
    /// Sets both numbers and the kind; answers the whole pair.
    pub async fn set(&mut self, _first: i64, first: i64, r#type: String) -> Self {
        self.first = _first;
        self.second = first;
        self.kind = r#type;
        self.clone()
    }

    /// Compiled out: the handle must not have it either (its argument type does not exist).
    #[cfg(any())]
    pub async fn gone(&mut self, _x: NoSuchType) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_mirror_plain_rust_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_on(&dir.path().join("one.db"), |h| {
        h.register::<Pair>(|_| Pair::default(), ActorOptions::default())
            .unwrap();
    })
    .await;
    let pair = Pair::handle(host.host.service(), "p").unwrap();
    let answered = pair.set(1, 2, "odd".into()).await.unwrap();
    assert_eq!(
        answered,
        Pair {
            first: 1,
            second: 2,
            kind: "odd".into()
        }
    );
    host.stop().await;
}
