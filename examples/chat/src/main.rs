//! A chat room: a `room` actor keeps its members and fans every message out to each member's
//! `member` actor, which keeps an inbox. Both are typed actors; the room calls the members from
//! inside its own turn. At the end the program lists every room the store holds.

use francis::prelude::*;
use francis::{ListStatesOptions, Result};
use serde::{Deserialize, Serialize};

/// One message as a member receives it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Message {
    room: String,
    from: String,
    text: String,
}

#[derive(Default, Clone, Serialize, Deserialize)]
struct RoomState {
    members: Vec<String>,
    posted: u64,
}

/// A room, addressed by its name.
struct Room {
    state: Client<RoomState>,
}

#[actor]
impl Room {
    /// Adds `member` (once); answers how many members the room has.
    pub async fn join(&mut self, ctx: &ActorContext, member: String) -> Result<usize> {
        let mut room = self.state.get(ctx).await?;
        if !room.members.contains(&member) {
            room.members.push(member);
            self.state.set(ctx, room.clone()).await?;
        }
        Ok(room.members.len())
    }

    /// Sends `text` from `from` to every member (the sender too); answers how many received it.
    pub async fn post(&mut self, ctx: &ActorContext, from: String, text: String) -> Result<usize> {
        let mut room = self.state.get(ctx).await?;
        if !room.members.contains(&from) {
            return Err(Error::invalid_argument(
                "from",
                format!("{from} is not a member"),
            ));
        }
        let message = Message {
            room: ctx.actor().actor_id().to_owned(),
            from,
            text,
        };
        for member in &room.members {
            Member::handle(ctx.service(), member.as_str())?
                .deliver(message.clone())
                .await?;
        }
        room.posted += 1;
        self.state.set(ctx, room.clone()).await?;
        Ok(room.members.len())
    }

    /// The members, in the order they joined.
    #[peek]
    pub async fn members(&self, ctx: &ActorContext) -> Result<Vec<String>> {
        Ok(self.state.get(ctx).await?.members)
    }
}

/// A member's inbox, addressed by the member's name.
struct Member {
    inbox: Client<Vec<Message>>,
}

#[actor]
impl Member {
    /// Keeps `message` in the inbox.
    pub async fn deliver(&mut self, ctx: &ActorContext, message: Message) -> Result<()> {
        let mut inbox = self.inbox.get(ctx).await?;
        inbox.push(message);
        self.inbox.set(ctx, inbox).await
    }

    /// Everything received, oldest first.
    #[peek]
    pub async fn inbox(&self, ctx: &ActorContext) -> Result<Vec<Message>> {
        self.inbox.get(ctx).await
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    // The peer address other hosts use (the tests pass a free port).
    let address = std::env::args().nth(1).unwrap_or("127.0.0.1:7591".into());
    let host = LocalHost::builder()
        .address(address)
        .sqlite("chat.db")
        .runtime_psks(["a-cluster-key-of-at-least-32-bytes!!"])
        .build()
        .await?;
    let room = |init: ActorInit| Room {
        state: Client::new(init.actor),
    };
    let member = |init: ActorInit| Member {
        inbox: Client::new(init.actor),
    };
    host.register::<Room>(room, ActorOptions::default())?;
    host.register::<Member>(member, ActorOptions::default())?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (host, s) = (host.clone(), shutdown.clone());
        async move { host.run(s).await }
    });
    host.serving().await?;

    let service = host.service();
    let rust = Room::handle(&service, "rust")?;
    let tea = Room::handle(&service, "tea")?;
    rust.join("alice".into()).await?;
    rust.join("bob".into()).await?;
    tea.join("bob".into()).await?;
    rust.post("alice".into(), "hello, rustaceans".into())
        .await?;
    tea.post("bob".into(), "kettle's on".into()).await?;
    if let Err(e) = tea.post("alice".into(), "me too".into()).await {
        println!("alice cannot post to tea: {e}");
    }
    println!("rust members: {}", rust.members().await?.join(", "));
    for message in Member::handle(&service, "bob")?.inbox().await? {
        println!(
            "bob got [{}] {}: {}",
            message.room, message.from, message.text
        );
    }
    let rooms = service
        .list_states(Room::TYPE, ListStatesOptions::default())
        .await?;
    let names: Vec<&str> = rooms.items.iter().map(|i| i.actor_id.as_str()).collect();
    println!("rooms: {}", names.join(", "));
    shutdown.cancel();
    running.await??;
    Ok(())
}
