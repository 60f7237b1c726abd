//! The one protocol between a [`ConsumerConnection`](super::consumer::ConsumerConnection)
//! and the *reader* it feeds (a subscription's Dispatcher, or the
//! Republisher).
//!
//! The connection sends [`Deliver`] (records, in offset order per
//! partition, with the connection incarnation that read them),
//! [`Released`] (partitions given up, answered once the reader dropped
//! what it had of them) and, for a transactional subscription,
//! [`Refused`] (records whose outputs the broker refused at commit). The reader sends [`Ready`] when an incarnation
//! starts (it then gets every unfinished record) and [`Completed`] for
//! records whose fate is final, in batches.
//!
//! [`Feed`] is the reader's side, shared by both readers: which
//! connection incarnation feeds it (records of an older one are stale: the
//! current one reads them again), how often each partition was released
//! (work begun before is of a partition given up since), and where
//! completions go.

use std::sync::Arc;

use actix::prelude::*;
use rustc_hash::FxHashMap;

use crate::envelope::{OutgoingRecord, Record, TopicPartition};

/// A batch of records for a reader, with where to report completions.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Deliver {
    pub(crate) records: Vec<Arc<Record>>,
    /// Where to send [`Completed`] for these records.
    pub(crate) from: Recipient<Completed>,
    /// The connection incarnation that read them; records of an older
    /// incarnation are dropped (the new one reads them again).
    pub(crate) incarnation: u64,
}

/// Records whose fate is final (acked, forwarded, or durably
/// dead-lettered), mostly in runs of one partition: one message per batch,
/// not per record; with, for a transactional subscription, what the
/// handlers of acknowledged records published (committed in one
/// transaction with their offsets).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Completed(pub(crate) Vec<Arc<Record>>, pub(crate) Outputs);

/// What handlers of a transactional subscription published, by the record
/// they handled.
pub(crate) type Outputs = Vec<(Arc<Record>, Vec<OutgoingRecord>)>;

/// A reader incarnation started and wants every unfinished record.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Ready;

/// These partitions are no longer this member's: drop every record of them
/// not yet under way, and do nothing more for them (no handling, retry,
/// dead letter or forward); an attempt already running finishes and its
/// outcome is discarded. The connection commits and gives the partitions
/// back only once this is answered.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Released {
    pub(crate) partitions: Vec<TopicPartition>,
}

/// Partitions being revoked, before they are given back: the reader may
/// give up records of them it has not started ([`GivenUp`]), so that the
/// revocation does not wait for them (the next owner reads them again). A
/// Dispatcher gives up the records of retry partitions waiting for their
/// due time; other readers ignore it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Revoking {
    pub(crate) partitions: Vec<TopicPartition>,
}

/// From the reader, of partitions being revoked: the records of each from
/// its offset on were not started and will not be. The connection stops
/// waiting for them and commits below that offset.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct GivenUp(pub(crate) Vec<(TopicPartition, i64)>);

/// Records of a transactional subscription whose outputs the broker
/// refused for good when their transaction was committed (a partition the
/// topic does not have, a record it does not take), with why: their fate
/// is open again. The reader dead-letters each with the reason and then
/// reports it [`Completed`]; until then it stays uncommitted, and the rest
/// of the transaction commits without it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Refused(pub(crate) Vec<(Arc<Record>, String)>);

/// Where a connection's records go: the reader it feeds (a Dispatcher or
/// the Republisher).
#[derive(Clone)]
pub(crate) struct Reader {
    pub(crate) deliver: Recipient<Deliver>,
    pub(crate) released: Recipient<Released>,
    pub(crate) refused: Recipient<Refused>,
    pub(crate) revoking: Recipient<Revoking>,
}

/// Resolves the running incarnation of the reader, and its number.
pub(crate) type FindReader = Box<dyn Fn() -> Option<(Reader, u64)>>;

/// What a [`Deliver`] is to the reader that gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// From the incarnation feeding it: take the records.
    Current,
    /// From a new incarnation: drop everything of the old one (it is read
    /// again), then take the records.
    Fresh,
    /// From an incarnation older than the current one: drop the records.
    Stale,
}

/// When and from where a record was taken: its work counts only while
/// [`Feed::is_current`] says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    incarnation: u64,
    /// How many releases the reader had seen when it took the record.
    releases: u64,
}

/// The reader's side of the protocol (the connection feeding it); see the
/// module documentation.
#[derive(Default)]
pub(crate) struct Feed {
    /// The connection incarnation feeding the reader, and where its
    /// completions go.
    incarnation: Option<(Recipient<Completed>, u64)>,
    /// How many partitions were [`Released`] so far.
    releases: u64,
    /// Each partition released, with `releases` after its last release: a
    /// record stamped before that is no longer this member's. Looked up
    /// only when something was released since a record was stamped.
    released: FxHashMap<TopicPartition, u64>,
}

impl Feed {
    /// Classifies `msg` by its incarnation, taking a fresh one as current.
    pub(crate) fn arrival(&mut self, msg: &Deliver) -> Arrival {
        match self.current_incarnation() {
            Some(o) if msg.incarnation < o => Arrival::Stale,
            Some(o) if msg.incarnation == o => Arrival::Current,
            _ => {
                self.incarnation = Some((msg.from.clone(), msg.incarnation));
                Arrival::Fresh
            }
        }
    }

    /// The connection incarnation feeding the reader, while it is alive:
    /// records of a dead one are read again by its successor.
    fn current_incarnation(&self) -> Option<u64> {
        self.incarnation
            .as_ref()
            .filter(|(connection, _)| connection.connected())
            .map(|(_, o)| *o)
    }

    /// The stamp of `record`, taken now.
    pub(crate) fn stamp(&self, record: &Record) -> Stamp {
        self.stamper()(record)
    }

    /// Stamps records, taken now: for a batch, with the feeding
    /// incarnation looked up once.
    pub(crate) fn stamper(&self) -> impl Fn(&Record) -> Stamp + '_ {
        let stamp = Stamp {
            incarnation: self.current_incarnation().unwrap_or(0),
            releases: self.releases,
        };
        move |_| stamp
    }

    /// Whether work on `record` stamped `stamp` is still this member's:
    /// taken from the incarnation feeding it, of a partition not given up
    /// since.
    pub(crate) fn is_current(&self, stamp: Stamp, record: &Record) -> bool {
        self.currency()(stamp, record)
    }

    /// [`is_current`](Self::is_current) for a batch, with the feeding
    /// incarnation looked up once.
    pub(crate) fn currency(&self) -> impl Fn(Stamp, &Record) -> bool + '_ {
        let current = self.current_incarnation();
        move |stamp, record| {
            Some(stamp.incarnation) == current
                && (stamp.releases == self.releases
                    || self
                        .released
                        .get(&record.topic_partition())
                        .is_none_or(|&at| at <= stamp.releases))
        }
    }

    /// Notes that `partitions` were given up.
    pub(crate) fn released(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.releases += 1;
            self.released.insert(tp.clone(), self.releases);
        }
    }

    /// Reports `records` finished, in one message, with what their
    /// handlers published in a transaction.
    pub(crate) fn complete(&self, records: Vec<Arc<Record>>, outputs: Outputs) {
        if records.is_empty() {
            return;
        }
        if let Some((connection, _)) = &self.incarnation {
            connection.do_send(Completed(records, outputs));
        }
    }
}
