//! Routing by message type: several message types on one topic are told
//! apart by the type-name header, and each is decoded into its own type.

use std::fmt;
use std::sync::Arc;

use actix::{Actor, Context, Handler};

use crate::codec::{type_name_of, ContentType, Decode};
use crate::dead_letter::FailureKind;
use crate::delivery::outlet::OutletId;
use crate::delivery::{Batch, BatchOutcome, Delivery};
use crate::envelope::{header, Headers, Record};
use crate::subscription::lane::Reply;

/// Decodes a record into one message type and calls the handler actor's
/// `Handler` for it, in the actor's context (a lane's runner calls it).
pub(crate) type RouteFn<A> = fn(
    &mut A,
    &mut <A as Actor>::Context,
    Arc<Record>,
    u32,
    ContentType,
    Option<OutletId>,
) -> Result<Reply<A>, crate::Error>;

/// The [`RouteFn`] of message type `T`.
fn call<A, T>(
    act: &mut A,
    ctx: &mut Context<A>,
    record: Arc<Record>,
    attempt: u32,
    default_ct: ContentType,
    outlet: Option<OutletId>,
) -> Result<Reply<A>, crate::Error>
where
    A: Actor<Context = Context<A>> + Handler<Delivery<T>>,
    <A as Handler<Delivery<T>>>::Result: 'static,
    T: Decode,
{
    let message = T::decode_record(&record, default_ct)?;
    let delivery = Delivery::new(message, record, attempt).with_outlet(outlet);
    let response = act.handle(delivery, ctx);
    Ok(Reply::of::<Delivery<T>, _>(response, ctx))
}

/// Decodes a batch of a lane's records into `T`s and calls the handler
/// actor's `Handler<Batch<T>>` with them; `Err` names the first record
/// that does not decode (the handler is not called).
pub(crate) type BatchFn<A> = fn(
    &mut A,
    &mut <A as Actor>::Context,
    Vec<(Arc<Record>, u32)>,
    ContentType,
    Option<OutletId>,
) -> Result<Reply<A, BatchOutcome>, (usize, crate::Error)>;

/// The [`BatchFn`] of message type `T`.
fn call_batch<A, T>(
    act: &mut A,
    ctx: &mut Context<A>,
    records: Vec<(Arc<Record>, u32)>,
    default_ct: ContentType,
    outlet: Option<OutletId>,
) -> Result<Reply<A, BatchOutcome>, (usize, crate::Error)>
where
    A: Actor<Context = Context<A>> + Handler<Batch<T>>,
    <A as Handler<Batch<T>>>::Result: 'static,
    T: Decode,
{
    let mut deliveries = Vec::with_capacity(records.len());
    for (i, (record, attempt)) in records.into_iter().enumerate() {
        let message = T::decode_record(&record, default_ct).map_err(|e| (i, e))?;
        deliveries.push(Delivery::new(message, record, attempt).with_outlet(outlet));
    }
    let response = act.handle(Batch::new(deliveries), ctx);
    Ok(Reply::of::<Batch<T>, _>(response, ctx))
}

/// The route of a batch handler's type in its [`Routes`]: never called
/// (its records go to the [`BatchFn`]); there so that a record is told
/// routable or not as a single record's handler's would be.
fn batched<A: Actor>(
    _: &mut A,
    _: &mut A::Context,
    _: Arc<Record>,
    _: u32,
    _: ContentType,
    _: Option<OutletId>,
) -> Result<Reply<A>, crate::Error> {
    Err(crate::Error::Config(
        "a batch handler's records are handled in batches".into(),
    ))
}

/// The message types a handler actor `A` accepts on one subscription.
///
/// ```
/// # use actix::prelude::*;
/// # use kafkactor::prelude::*;
/// # #[derive(serde::Deserialize)] struct OrderPlaced;
/// # #[derive(serde::Deserialize)] struct OrderCancelled;
/// # struct Orders;
/// # impl Actor for Orders { type Context = Context<Self>; }
/// # impl Handler<Delivery<OrderPlaced>> for Orders { type Result = Outcome; fn handle(&mut self, _: Delivery<OrderPlaced>, _: &mut Context<Self>) -> Outcome { Outcome::Ack } }
/// # impl Handler<Delivery<OrderCancelled>> for Orders { type Result = Outcome; fn handle(&mut self, _: Delivery<OrderCancelled>, _: &mut Context<Self>) -> Outcome { Outcome::Ack } }
/// let routes = Routes::<Orders>::new().route::<OrderPlaced>().route::<OrderCancelled>();
/// ```
pub struct Routes<A: Actor> {
    /// Each accepted type name, its route and the full type name. A record's
    /// type-name header is compared as bytes against each in turn: a topic
    /// carries a handful of types, where a scan beats hashing the name.
    by_name: Vec<(Box<str>, RouteFn<A>, &'static str)>,
    /// The route of records no type name routes (a [`Raw`](crate::Raw)
    /// route), with its type's name.
    fallback: Option<(RouteFn<A>, &'static str)>,
    /// Type names claimed twice: starting with these routes fails.
    collisions: Vec<String>,
    /// A batch handler's call, when `A` takes its records in batches.
    pub(crate) batch: Option<BatchFn<A>>,
}

impl<A: Actor> fmt::Debug for Routes<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes")
            .field("types", &self.names())
            .finish()
    }
}

impl<A: Actor> Routes<A> {
    /// The message types it takes, as (name on the wire, Rust path): a
    /// route taking any record is named by its type (`Raw`).
    pub(crate) fn described(&self) -> Vec<(String, &'static str)> {
        let mut types: Vec<_> = self
            .by_name
            .iter()
            .map(|(n, _, p)| (n.to_string(), *p))
            .collect();
        if let Some((_, path)) = self.fallback {
            let name = path.split('<').next().unwrap_or(path);
            types.push((name.rsplit("::").next().unwrap_or(name).to_string(), path));
        }
        types
    }

    /// The accepted type names, sorted.
    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.iter().map(|(n, ..)| &**n).collect();
        names.sort_unstable();
        names
    }
}

impl<A: Actor<Context = Context<A>>> Default for Routes<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Actor<Context = Context<A>>> Routes<A> {
    /// No routes yet.
    pub fn new() -> Self {
        Routes {
            by_name: Vec::new(),
            fallback: None,
            collisions: Vec::new(),
            batch: None,
        }
    }

    /// A batch handler's one type `T`, routed as [`route`](Routes::route)
    /// routes it.
    pub(crate) fn batch_of<T>() -> Self
    where
        T: Decode,
        A: Handler<Batch<T>>,
        <A as Handler<Batch<T>>>::Result: 'static,
    {
        let mut routes = Routes::new();
        let full = std::any::type_name::<T>();
        if T::BY_TYPE_NAME {
            routes
                .by_name
                .push((type_name_of::<T>().into(), batched::<A>, full));
        } else {
            routes.fallback = Some((batched::<A>, full));
        }
        routes.batch = Some(call_batch::<A, T>);
        routes
    }

    /// Accepts `T`, routed by its type name ([`type_name_of`]: the last
    /// segment of its path). Two routed types with one name (`a::Event`,
    /// `b::Event`) make starting the application fail with
    /// [`Error::Config`](crate::Error::Config) naming both: give one of them
    /// another name with [`route_named`](Routes::route_named), and publish
    /// it with that name ([`Publish::type_name`](crate::Publish::type_name),
    /// after [`Publish::message`](crate::Publish::message), which stamps the
    /// type's own).
    pub fn route<T>(mut self) -> Self
    where
        T: Decode,
        A: Handler<Delivery<T>>,
        <A as Handler<Delivery<T>>>::Result: 'static,
    {
        if !T::BY_TYPE_NAME {
            let full = std::any::type_name::<T>();
            if let Some((_, other)) = self.fallback {
                self.collisions.push(format!(
                    "both {other} and {full} take every record: keep one of them"
                ));
            }
            self.fallback = Some((call::<A, T>, full));
            return self;
        }
        self.route_named::<T>(type_name_of::<T>())
    }

    /// Accepts `T` under an explicit type name.
    pub fn route_named<T>(mut self, name: &str) -> Self
    where
        T: Decode,
        A: Handler<Delivery<T>>,
        <A as Handler<Delivery<T>>>::Result: 'static,
    {
        let call: RouteFn<A> = call::<A, T>;
        let full = std::any::type_name::<T>();
        if let Some((_, _, other)) = self.by_name.iter().find(|(n, ..)| &**n == name) {
            self.collisions.push(format!(
                "type name {name:?} is claimed by both {other} and {full}: \
                 give one another name with Routes::route_named"
            ));
            return self;
        }
        self.by_name.push((name.into(), call, full));
        self
    }

    /// Fails when two routed types claim one type name.
    pub(crate) fn check(&self) -> crate::Result<()> {
        match self.collisions.as_slice() {
            [] => Ok(()),
            all => Err(crate::Error::Config(all.join("; "))),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_name.is_empty() && self.fallback.is_none()
    }

    /// The route for a record, or why there is none.
    // Inlined into the lane's runner (a call per record).
    #[inline(always)]
    pub(crate) fn select(&self, headers: &Headers) -> Result<&RouteFn<A>, (FailureKind, String)> {
        if self.by_name.is_empty() {
            if let Some((route, _)) = &self.fallback {
                return Ok(route);
            }
        }
        let found = match headers.get(header::TYPE_NAME) {
            Some(raw) => self
                .by_name
                .iter()
                .find(|(name, ..)| name.as_bytes() == raw)
                .map(|(_, route, _)| route)
                .ok_or(Some(raw)),
            None if self.by_name.len() == 1 && self.fallback.is_none() => Ok(&self.by_name[0].1),
            None => Err(None),
        };
        match (found, &self.fallback) {
            (Ok(route), _) => Ok(route),
            (Err(_), Some((route, _))) => Ok(route),
            (Err(Some(raw)), None) => Err(match std::str::from_utf8(raw) {
                Ok(name) => (
                    FailureKind::Unroutable,
                    format!(
                        "no handler accepts type {name:?} (accepted: {:?})",
                        self.names()
                    ),
                ),
                Err(_) => (
                    FailureKind::Decode,
                    "type-name header is not UTF-8".to_string(),
                ),
            }),
            (Err(None), None) => Err((
                FailureKind::Unroutable,
                format!(
                    "record has no {} header and {} types are accepted",
                    header::TYPE_NAME,
                    self.by_name.len()
                ),
            )),
        }
    }
}
