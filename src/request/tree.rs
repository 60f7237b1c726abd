//! The `replies` child: the reader of the application's reply partition.

use std::sync::Arc;

use kafkactor_actors::ChildSpec;

use super::{Pending, Replies, Requests};
use crate::broker::BrokerBackend;
use crate::connection::reader::{PartitionReader, Position};

/// The `replies:<topic>[<partition>]` child reading `replies`, and what
/// the application's requesters share with it.
pub(crate) fn replies_spec(
    backend: Arc<dyn BrokerBackend>,
    replies: Replies,
    pending: Pending,
) -> (ChildSpec, Arc<Requests>) {
    let requests = Arc::new(Requests {
        replies,
        pending: Arc::new(pending),
        position: Position::new(),
    });
    let (topic, partition) = (
        Arc::<str>::from(requests.replies.topic.as_str()),
        requests.replies.partition,
    );
    let (position, sink) = (requests.position.clone(), requests.pending.clone());
    let spec = ChildSpec::new(format!("replies:{topic}[{partition}]"), move || {
        PartitionReader::new(
            backend.clone(),
            topic.clone(),
            partition,
            position.clone(),
            sink.clone(),
        )
    });
    (spec, requests)
}
