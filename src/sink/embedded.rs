//! The embedded cluster: librdkafka's in-process mock cluster, started when no
//! brokers are named, so the gateway runs with nothing else installed. Events
//! live in this process's memory only.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// A running in-process cluster; dropping it stops the cluster.
pub struct Embedded {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl Embedded {
    /// Starts a one-broker cluster holding `topic` with `partitions` partitions.
    pub fn start(topic: &str, partitions: i32) -> anyhow::Result<Embedded> {
        let cluster = MockCluster::new(1)?;
        cluster.create_topic(topic, partitions, 1)?;
        Ok(Embedded { cluster })
    }

    /// The address a client such as `kcat -b` connects to.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// The underlying cluster, for fault injection in tests.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}
