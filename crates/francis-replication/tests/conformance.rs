//! The `francis_store` conformance suite, unchanged, against three-node clusters over real
//! QUIC on loopback: once through a follower (every call forwarded to the leader), once
//! through the leader, and the durability cases restart all three nodes on their files.

mod support;

use async_trait::async_trait;
use francis_replication::ReplicatedProvider;
use francis_store::testing::ProviderHarness;
use support::Cluster;

/// Makes a fresh three-node cluster per store and hands out one node's provider.
struct ClusterHarness {
    through_leader: bool,
    clusters: Vec<Cluster>,
}

impl ClusterHarness {
    fn new(through_leader: bool) -> Self {
        ClusterHarness {
            through_leader,
            clusters: Vec::new(),
        }
    }

    async fn pick(&self, c: &Cluster) -> ReplicatedProvider {
        let i = if self.through_leader {
            c.leader().await
        } else {
            c.follower().await
        };
        c.provider(i)
    }
}

#[async_trait]
impl ProviderHarness for ClusterHarness {
    type Provider = ReplicatedProvider;

    async fn fresh(&mut self) -> ReplicatedProvider {
        let c = Cluster::start(3).await;
        let p = self.pick(&c).await;
        self.clusters.push(c);
        p
    }

    async fn reopen(&mut self, provider: ReplicatedProvider) -> ReplicatedProvider {
        let c = self
            .clusters
            .iter_mut()
            .find(|c| c.addrs.iter().any(|a| a == provider.address()))
            .expect("the provider's cluster");
        drop(provider);
        c.stop_all().await;
        for i in 0..c.addrs.len() {
            c.restart(i).await;
        }
        c.wait_leader().await;
        let c = self
            .clusters
            .iter()
            .find(|c| c.nodes.iter().all(Option::is_some))
            .expect("cluster");
        self.pick(c).await
    }
}

mod via_follower {
    francis_store::provider_conformance_tests!(super::ClusterHarness::new(false), reopen);
}

mod via_leader {
    francis_store::provider_conformance_tests!(super::ClusterHarness::new(true));
}
