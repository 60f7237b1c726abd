//! What the polling thread does to partitions in librdkafka, for the poll
//! loop and the rebalance callbacks alike: commit their offsets (alone or
//! in a transaction) and hold them; and partition list conversions.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::shared::{lock, Shared};
use crate::broker::kafka::commit_error;
use crate::broker::TransactionFailed;
use crate::envelope::{OutgoingRecord, TopicPartition};
use crate::error::{Error, Result};

pub(super) fn from_tpl(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

/// Refuses offsets of partitions this member is not assigned (any more):
/// one given up past its revoke deadline while the connection still
/// finished it, say. The broker checks the member's generation, not which
/// partitions it owns: a late commit would move the next owner's offsets,
/// and a late transaction write outputs the next owner writes too.
fn assigned<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &[(TopicPartition, i64)],
) -> Result<()> {
    let assignment = consumer
        .assignment()
        .map_err(|e| commit_error("the assignment could not be read", &e))?;
    match offsets
        .iter()
        .find(|(tp, _)| assignment.find_partition(&tp.topic, tp.partition).is_none())
    {
        Some((tp, _)) => Err(Error::commit(
            format!("{tp} is not assigned to this member (given up)"),
            false,
        )),
        None => Ok(()),
    }
}

/// A transaction of partitions this member is assigned.
pub(super) fn transaction<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    shared: &Shared,
    records: Vec<OutgoingRecord>,
    offsets: &[(TopicPartition, i64)],
) -> std::result::Result<(), TransactionFailed> {
    assigned(consumer, offsets)?;
    lock(&shared.transactions).commit(consumer, records, offsets)
}

pub(super) fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &[(TopicPartition, i64)],
) -> Result<()> {
    assigned(consumer, offsets)?;
    let mut tpl = TopicPartitionList::new();
    for (tp, offset) in offsets {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
            .map_err(|e| commit_error("offsets", &e))?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| commit_error("commit", &e))
}

/// Holds (pauses) or releases partitions for the actor.
pub(super) fn hold<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: Vec<TopicPartition>,
    held: bool,
) {
    let tpl = to_tpl(&partitions);
    let result = if held {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, ?partitions, held, "hold failed");
    }
}

fn to_tpl(partitions: &[TopicPartition]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for tp in partitions {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    tpl
}
