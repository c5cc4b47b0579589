//! Bank accounts as typed actors: deposits, withdrawals, and a transfer between two accounts
//! made by a third actor with typed calls. Every refusal is the account's own error type,
//! which reaches the caller (on any host) as a value it can match on, and a transfer that
//! fails half-way puts the money back.
//!
//! Run it twice in one directory: the balances are durable (`bank.db`).

use francis::prelude::*;
use serde::{Deserialize, Serialize};

/// Why an account refuses an operation.
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

/// One account, addressed as `account/<id>`.
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
            let available = books.balance;
            Err(AccountError::Insufficient { available })?;
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

    /// The balance, in a shared read-only turn.
    #[peek]
    pub async fn balance(&self, ctx: &ActorContext) -> Result<i64, Error> {
        Ok(self.books.get(ctx).await?.balance)
    }
}

/// Moves money between accounts, calling them from inside its own turn.
struct Teller;

#[actor(error = AccountError)]
impl Teller {
    /// Moves `amount` from `from` to `to`; answers both new balances. If the deposit is
    /// refused, the withdrawn money goes back and the deposit's error is the answer.
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
            Err(refused) => {
                source.deposit(amount).await?;
                Err(refused.into())
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The peer address other hosts use (the tests pass a free port).
    let address = std::env::args().nth(1).unwrap_or("127.0.0.1:7581".into());
    let host = LocalHost::builder()
        .address(address)
        .sqlite("bank.db")
        .runtime_psks(["a-cluster-key-of-at-least-32-bytes!!"])
        .build()
        .await?;
    let account = |init: ActorInit| Account {
        books: Client::new(init.actor),
    };
    host.register::<Account>(account, ActorOptions::default())?;
    host.register::<Teller>(|_| Teller, ActorOptions::default())?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (host, s) = (host.clone(), shutdown.clone());
        async move { host.run(s).await }
    });
    host.serving().await?;

    let service = host.service();
    let alice = Account::handle(&service, "alice")?;
    let bob = Account::handle(&service, "bob")?;
    let savings = Account::handle(&service, "savings")?;
    let teller = Teller::handle(&service, "front-desk")?;
    alice.deposit(100).await?;
    let (a, b) = teller.transfer("alice".into(), "bob".into(), 30).await?;
    println!("transfer 30 alice -> bob: alice {a}, bob {b}");
    match teller.transfer("bob".into(), "alice".into(), 500).await {
        Err(CallError::Actor(AccountError::Insufficient { available })) => {
            println!("transfer 500 bob -> alice refused: bob has {available}")
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    savings.close().await?;
    match teller.transfer("alice".into(), "savings".into(), 10).await {
        Err(CallError::Actor(e)) => println!("transfer 10 alice -> savings refused: {e}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    let (a, b, s) = (
        alice.balance().await?,
        bob.balance().await?,
        savings.balance().await?,
    );
    println!("balances: alice {a}, bob {b}, savings {s}");
    shutdown.cancel();
    running.await??;
    Ok(())
}
