//! Order commands carried between nodes: a node asked to place an order
//! at a restaurant, or to transition an order, whose region another node
//! serves sends the command over NATS request/reply to
//! `<bucket>.region.<region>.cmd`, which only the region's owner
//! subscribes to, and answers what the owner answered.
//!
//! The caller's identity travels with a transition: the forwarding node
//! checked the token, the owner decides what that caller may do, exactly
//! as for a local command. A new order travels as the draft the forwarding
//! node validated and priced (its idempotency key with it); the owner
//! writes it and starts its actor. The bus is trusted (one NATS account
//! for the cluster); nothing a client sends is passed on unparsed.

use super::Cluster;
use super::region::Region;
use actors::domain::input::{NewOrder, OrderLine};
use actors::domain::lifecycle::{Action, Refusal};
use actors::domain::model::{Caller, DeliveryAddress, Order, OrderId, PlacedOrder, Role};
use actors::engine::order::{CommandError, Orders, TransitionCommand};
use actors::metrics as m;
use actors::store::{IdempotencyKey, OrderDraft, PlaceOutcome, PricedLine, Store, StoreError};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longer than the owner's own wait on its order actor
/// (`ORDER_CALL_TIMEOUT`), so a forwarded command that commits late is
/// still answered with its outcome.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(35);
/// Forwarded commands an owner works on at once; more wait in its
/// subscription's bounded buffer.
const SERVING_AT_ONCE: usize = 256;
/// How long a node that is still subscribed to a region it no longer
/// holds waits before it answers that it does not serve it: the region's
/// new owner, subscribed too, answers first, and a requester takes the
/// first answer only.
const NOT_OWNER_GRACE: Duration = Duration::from_secs(2);
/// How long a command waits for a region that is between owners after a
/// graceful hand-over (its lease deleted, no node named yet): the next
/// owner claims it at its next rebalance (`cluster.rebalance_ms`, 1 s) and
/// loads its orders, so the client gets its answer instead of a 503. A
/// region whose lease still names a node that does not answer (a failover
/// in progress) is answered 503 at once.
const HANDOVER_WAIT: Duration = Duration::from_secs(3);
const HANDOVER_RETRY: Duration = Duration::from_millis(100);

/// What travels to a region's owner.
#[derive(Debug, Serialize, Deserialize)]
enum ForwardedCommand {
    Transition(ForwardedTransition),
    Place(Box<ForwardedPlace>),
    /// A driver's answer, on its own node, to an offer this region's
    /// dispatcher made (`drivers.rs`). `on_socket`: the outcome goes to the
    /// driver's socket as frames, as on one node; else it is the answer.
    Respond {
        offer_id: actors::domain::model::OfferId,
        driver_id: actors::domain::model::DriverId,
        accept: bool,
        on_socket: bool,
    },
}

/// A new order as the forwarding node validated and priced it.
#[derive(Debug, Serialize, Deserialize)]
struct ForwardedPlace {
    customer_id: i64,
    restaurant_id: i64,
    delivery_address: DeliveryAddress,
    lines: Vec<ForwardedLine>,
    subtotal_cents: i64,
    delivery_fee_cents: i64,
    service_fee_cents: i64,
    total_cents: i64,
    estimated_delivery_at: Option<DateTime<Utc>>,
    placed_at: DateTime<Utc>,
    /// (key, digest of the request body).
    idempotency: Option<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ForwardedLine {
    menu_item_id: i64,
    name: String,
    quantity: i32,
    unit_price_cents: i64,
    special_instructions: Option<String>,
}

impl ForwardedPlace {
    fn of(draft: &OrderDraft, idempotency: Option<&IdempotencyKey>) -> ForwardedPlace {
        ForwardedPlace {
            customer_id: draft.customer_id,
            restaurant_id: draft.order.restaurant_id,
            delivery_address: draft.order.delivery_address.clone(),
            lines: draft
                .lines
                .iter()
                .map(|line| ForwardedLine {
                    menu_item_id: line.menu_item_id,
                    name: line.name.clone(),
                    quantity: line.quantity,
                    unit_price_cents: line.unit_price_cents,
                    special_instructions: line.special_instructions.clone(),
                })
                .collect(),
            subtotal_cents: draft.subtotal_cents,
            delivery_fee_cents: draft.delivery_fee_cents,
            service_fee_cents: draft.service_fee_cents,
            total_cents: draft.total_cents,
            estimated_delivery_at: draft.estimated_delivery_at,
            placed_at: draft.placed_at,
            idempotency: idempotency.map(|k| (k.key.clone(), k.request_hash.clone())),
        }
    }

    fn into_parts(self) -> (OrderDraft, Option<IdempotencyKey>) {
        let order = NewOrder {
            restaurant_id: self.restaurant_id,
            lines: self
                .lines
                .iter()
                .map(|line| OrderLine {
                    menu_item_id: line.menu_item_id,
                    quantity: line.quantity,
                    special_instructions: line.special_instructions.clone(),
                })
                .collect(),
            delivery_address: self.delivery_address,
        };
        let draft = OrderDraft {
            customer_id: self.customer_id,
            order,
            lines: self
                .lines
                .into_iter()
                .map(|line| PricedLine {
                    menu_item_id: line.menu_item_id,
                    name: line.name,
                    quantity: line.quantity,
                    unit_price_cents: line.unit_price_cents,
                    special_instructions: line.special_instructions,
                })
                .collect(),
            subtotal_cents: self.subtotal_cents,
            delivery_fee_cents: self.delivery_fee_cents,
            service_fee_cents: self.service_fee_cents,
            total_cents: self.total_cents,
            estimated_delivery_at: self.estimated_delivery_at,
            placed_at: self.placed_at,
        };
        let idempotency = self
            .idempotency
            .map(|(key, request_hash)| IdempotencyKey { key, request_hash });
        (draft, idempotency)
    }
}

/// A transition as it travels: the command's parts, parsed already.
#[derive(Debug, Serialize, Deserialize)]
struct ForwardedTransition {
    order_id: OrderId,
    user_id: i64,
    role: String,
    restaurant_id: Option<i64>,
    driver_id: Option<i64>,
    action: String,
    expected_version: Option<i64>,
    reason: Option<String>,
}

/// What the owner answers: the order, or why not, in the shapes the
/// forwarding node turns back into the same HTTP answer.
#[derive(Debug, Serialize, Deserialize)]
enum ForwardedOutcome {
    Done(Box<Order>),
    Placed(Box<PlacedOrder>),
    Replayed(String),
    KeyReused,
    InProgress,
    NotFound,
    Forbidden(String),
    InvalidTransition(String),
    VersionConflict(String),
    StoreUnavailable,
    NotServed {
        region: String,
        owner: Option<String>,
    },
    Internal(String),
    /// What the dispatcher answered a driver's answer to an offer.
    Offer(Result<Option<Box<Order>>, actors::engine::dispatcher::OfferError>),
}

/// Why a forwarded command has no outcome from an owner.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Nobody serves the region just now (a failover in progress).
    #[error("no node serves region {0}")]
    NoOwner(String),
    #[error("the owner did not answer in time")]
    TimedOut,
    #[error("forwarding failed: {0}")]
    Failed(String),
}

impl ForwardedOutcome {
    fn of(result: Result<Order, CommandError>) -> ForwardedOutcome {
        match result {
            Ok(order) => ForwardedOutcome::Done(Box::new(order)),
            Err(CommandError::Refused(refusal)) => match refusal {
                Refusal::NotVisible => ForwardedOutcome::NotFound,
                Refusal::Forbidden { .. } => ForwardedOutcome::Forbidden(refusal.to_string()),
                Refusal::InvalidTransition { .. } | Refusal::NoDriverAssigned => {
                    ForwardedOutcome::InvalidTransition(refusal.to_string())
                }
                Refusal::VersionConflict { .. } => {
                    ForwardedOutcome::VersionConflict(refusal.to_string())
                }
            },
            Err(CommandError::Store(error)) => match error {
                StoreError::Conflict => ForwardedOutcome::VersionConflict(
                    "the order changed meanwhile; reload it".into(),
                ),
                StoreError::NotServed { region, owner } => {
                    ForwardedOutcome::NotServed { region, owner }
                }
                StoreError::Unavailable(_) => ForwardedOutcome::StoreUnavailable,
                other => ForwardedOutcome::Internal(other.to_string()),
            },
            Err(CommandError::Unavailable) => ForwardedOutcome::StoreUnavailable,
        }
    }

    fn of_place(result: Result<PlaceOutcome, StoreError>) -> ForwardedOutcome {
        match result {
            Ok(PlaceOutcome::Created(placed)) => ForwardedOutcome::Placed(placed),
            Ok(PlaceOutcome::Replayed(body)) => ForwardedOutcome::Replayed(body),
            Ok(PlaceOutcome::KeyReused) => ForwardedOutcome::KeyReused,
            Ok(PlaceOutcome::InProgress) => ForwardedOutcome::InProgress,
            Err(error) => ForwardedOutcome::of(Err(CommandError::Store(error))),
        }
    }

    /// A new order's outcome, or the error its owner answered.
    fn into_place(self) -> Result<PlaceOutcome, crate::http::error::ApiError> {
        match self {
            ForwardedOutcome::Placed(placed) => Ok(PlaceOutcome::Created(placed)),
            ForwardedOutcome::Replayed(body) => Ok(PlaceOutcome::Replayed(body)),
            ForwardedOutcome::KeyReused => Ok(PlaceOutcome::KeyReused),
            ForwardedOutcome::InProgress => Ok(PlaceOutcome::InProgress),
            other => Err(other.into_error()),
        }
    }

    /// The HTTP boundary's answer, as the owner's own gateway gives it.
    fn into_result(self) -> Result<Order, crate::http::error::ApiError> {
        match self {
            ForwardedOutcome::Done(order) => Ok(*order),
            other => Err(other.into_error()),
        }
    }

    fn into_error(self) -> crate::http::error::ApiError {
        use crate::http::error::ApiError;
        match self {
            ForwardedOutcome::Done(_)
            | ForwardedOutcome::Placed(_)
            | ForwardedOutcome::Replayed(_)
            | ForwardedOutcome::KeyReused
            | ForwardedOutcome::InProgress
            | ForwardedOutcome::Offer(_) => {
                ApiError::Internal("the owner answered another command".into())
            }
            ForwardedOutcome::NotFound => ApiError::NotFound("order"),
            ForwardedOutcome::Forbidden(m) => ApiError::Forbidden(m),
            ForwardedOutcome::InvalidTransition(m) => ApiError::InvalidTransition(m),
            ForwardedOutcome::VersionConflict(m) => ApiError::VersionConflict(m),
            ForwardedOutcome::StoreUnavailable => ApiError::StoreUnavailable,
            ForwardedOutcome::NotServed { region, owner } => {
                ApiError::not_served_here(region, owner)
            }
            ForwardedOutcome::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

fn subject(bucket: &str, region: &str) -> String {
    format!("{bucket}.region.{region}.cmd")
}

/// This node's side of forwarding: it sends commands to owners, and it
/// answers those sent to the regions it serves.
#[derive(Clone)]
pub struct Commands {
    client: async_nats::Client,
    bucket: String,
    /// Who holds which region, as this node sees it (both live as long as
    /// the process: the cycle through the cluster's handle is harmless).
    cluster: Cluster,
    /// One subscription task per region served.
    serving: Arc<std::sync::Mutex<BTreeMap<Region, JoinHandle<()>>>>,
    permits: Arc<Semaphore>,
}

impl Commands {
    pub fn new(client: async_nats::Client, cluster: &Cluster) -> Commands {
        Commands {
            client,
            bucket: cluster.inner.options.bucket.clone(),
            cluster: cluster.clone(),
            serving: Arc::default(),
            permits: Arc::new(Semaphore::new(SERVING_AT_ONCE)),
        }
    }

    /// Sends a new order to the owner of `region`, which writes it and
    /// starts its actor, and waits for its outcome.
    pub async fn forward_place(
        &self,
        region: &str,
        draft: &OrderDraft,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Result<PlaceOutcome, crate::http::error::ApiError>, ForwardError> {
        let command = ForwardedCommand::Place(Box::new(ForwardedPlace::of(draft, idempotency)));
        Ok(self.send(region, &command).await?.into_place())
    }

    /// Sends a transition to the owner of `region` and waits for its answer.
    pub async fn forward_transition(
        &self,
        region: &str,
        order_id: OrderId,
        command: &TransitionCommand,
    ) -> Result<Result<Order, crate::http::error::ApiError>, ForwardError> {
        let caller = command.caller;
        let message = ForwardedCommand::Transition(ForwardedTransition {
            order_id,
            user_id: caller.user_id,
            role: caller.role.as_str().to_string(),
            restaurant_id: caller.restaurant_id,
            driver_id: caller.driver_id,
            action: command.action.as_str().to_string(),
            expected_version: command.expected_version,
            reason: command.reason.clone(),
        });
        Ok(self.send(region, &message).await?.into_result())
    }

    /// Sends a driver's answer to an offer to the owner of `region`, whose
    /// dispatcher made it, and waits for what it answered. The region no
    /// longer served there (its owner changed): the offer is void.
    pub async fn forward_respond(
        &self,
        region: &str,
        offer_id: actors::domain::model::OfferId,
        driver_id: actors::domain::model::DriverId,
        accept: bool,
        on_socket: bool,
    ) -> Result<Result<Option<Order>, actors::engine::dispatcher::OfferError>, ForwardError> {
        use actors::engine::dispatcher::OfferError;
        let message = ForwardedCommand::Respond {
            offer_id,
            driver_id,
            accept,
            on_socket,
        };
        Ok(match self.send(region, &message).await? {
            ForwardedOutcome::Offer(result) => result.map(|order| order.map(|o| *o)),
            ForwardedOutcome::NotServed { .. } => Err(OfferError::NotFound),
            _ => Err(OfferError::Unavailable),
        })
    }

    /// Sends `message` to the owner of `region`; while nobody answers and
    /// the region is between owners after a hand-over, asks again for up
    /// to [`HANDOVER_WAIT`].
    async fn send(
        &self,
        region: &str,
        message: &ForwardedCommand,
    ) -> Result<ForwardedOutcome, ForwardError> {
        let payload: bytes::Bytes = serde_json::to_vec(message)
            .map_err(|e| ForwardError::Failed(e.to_string()))?
            .into();
        let started = Instant::now();
        let waiting_until = started + HANDOVER_WAIT;
        let outcome = loop {
            let outcome = self.ask(region, payload.clone()).await;
            let between_owners = Region::parse(region)
                .is_some_and(|parsed| self.cluster.holder_of(parsed).is_none());
            match outcome {
                Err(ForwardError::NoOwner(_))
                    if between_owners && Instant::now() + HANDOVER_RETRY < waiting_until =>
                {
                    metrics::counter!(m::CLUSTER_FORWARDED_COMMANDS_TOTAL, "result" => "waited_for_owner")
                        .increment(1);
                    tokio::time::sleep(HANDOVER_RETRY).await;
                }
                outcome => break outcome,
            }
        };
        let result = match &outcome {
            Ok(_) => "ok",
            Err(ForwardError::NoOwner(_)) => "no_owner",
            Err(ForwardError::TimedOut) => "timed_out",
            Err(ForwardError::Failed(_)) => "failed",
        };
        metrics::counter!(m::CLUSTER_FORWARDED_COMMANDS_TOTAL, "result" => result).increment(1);
        metrics::histogram!(m::CLUSTER_FORWARD_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    /// One request to the region's command subject.
    async fn ask(
        &self,
        region: &str,
        payload: bytes::Bytes,
    ) -> Result<ForwardedOutcome, ForwardError> {
        let asked = self
            .client
            .send_request(
                subject(&self.bucket, region),
                async_nats::Request::new()
                    .payload(payload)
                    .timeout(Some(FORWARD_TIMEOUT)),
            )
            .await;
        metrics::counter!(m::CLUSTER_BUS_MESSAGES_TOTAL, "direction" => "out").increment(1);
        match asked {
            Ok(reply) => serde_json::from_slice::<ForwardedOutcome>(&reply.payload)
                .map_err(|e| ForwardError::Failed(format!("unreadable answer: {e}"))),
            Err(error) => Err(match error.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    ForwardError::NoOwner(region.to_string())
                }
                async_nats::RequestErrorKind::TimedOut => ForwardError::TimedOut,
                async_nats::RequestErrorKind::Other => ForwardError::Failed(error.to_string()),
            }),
        }
    }

    /// Subscribes to the command subjects of `served` and drops the others'.
    pub async fn serve_only(
        &self,
        cluster: &Cluster,
        served: &[Region],
        orders: &Orders,
        store: &Arc<dyn Store>,
    ) {
        // Commands already taken by a dropped region's task finish.
        super::drop_unserved(&self.serving, served);
        for region in served {
            if super::lock(&self.serving).contains_key(region) {
                continue;
            }
            let subject = subject(&self.bucket, &region.key());
            match self.client.subscribe(subject).await {
                Ok(subscriber) => {
                    let task = tokio::spawn(self.clone().answer(
                        subscriber,
                        *region,
                        cluster.clone(),
                        orders.clone(),
                        store.clone(),
                    ));
                    super::lock(&self.serving).insert(*region, task);
                }
                Err(error) => {
                    tracing::warn!(%region, %error, "Region's command subject not subscribed; forwarded commands for it find no owner")
                }
            }
        }
    }

    async fn answer(
        self,
        mut subscriber: async_nats::Subscriber,
        region: Region,
        cluster: Cluster,
        orders: Orders,
        store: Arc<dyn Store>,
    ) {
        while let Some(message) = subscriber.next().await {
            metrics::counter!(m::CLUSTER_BUS_MESSAGES_TOTAL, "direction" => "in").increment(1);
            let Some(reply_to) = message.reply.clone() else {
                continue;
            };
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return;
            };
            let client = self.client.clone();
            let orders = orders.clone();
            let cluster = cluster.clone();
            let store = store.clone();
            // Commands on different orders run side by side; each order's
            // actor serialises its own.
            tokio::spawn(async move {
                let outcome = if cluster.owns(region) {
                    match serde_json::from_slice::<ForwardedCommand>(&message.payload) {
                        Ok(ForwardedCommand::Transition(forwarded)) => {
                            run(&orders, forwarded).await
                        }
                        Ok(ForwardedCommand::Place(forwarded)) => {
                            place(&orders, store.as_ref(), *forwarded).await
                        }
                        Ok(ForwardedCommand::Respond {
                            offer_id,
                            driver_id,
                            accept,
                            on_socket,
                        }) => match cluster.driver_link() {
                            Some(link) if on_socket => {
                                // Answered only once the dispatcher took it:
                                // an answer lost to its restart is reported.
                                let taken = link
                                    .dispatch()
                                    .respond_here_taken(offer_id, driver_id, accept)
                                    .await;
                                ForwardedOutcome::Offer(if taken {
                                    Ok(None)
                                } else {
                                    Err(actors::engine::dispatcher::OfferError::Unavailable)
                                })
                            }
                            Some(link) => ForwardedOutcome::Offer(
                                link.dispatch()
                                    .respond_here(offer_id, driver_id, accept)
                                    .await
                                    .map(|order| order.map(Box::new)),
                            ),
                            None => ForwardedOutcome::Internal("drivers are not linked".into()),
                        },
                        Err(error) => {
                            ForwardedOutcome::Internal(format!("unreadable command: {error}"))
                        }
                    }
                } else {
                    // Lost meanwhile (the subscription goes next): never
                    // run it here; let the new owner answer first.
                    tokio::time::sleep(NOT_OWNER_GRACE).await;
                    ForwardedOutcome::NotServed {
                        region: region.key(),
                        owner: cluster.holder_of(region),
                    }
                };
                metrics::counter!(m::CLUSTER_FORWARDED_COMMANDS_SERVED_TOTAL).increment(1);
                match serde_json::to_vec(&outcome) {
                    Ok(body) => {
                        if let Err(error) = client.publish(reply_to, body.into()).await {
                            tracing::warn!(%error, "Forwarded command's answer not sent");
                        }
                    }
                    Err(error) => tracing::error!(%error, "Forwarded command's answer not encoded"),
                }
                drop(permit);
            });
        }
    }
}

/// Writes a forwarded new order and starts its actor here, as the
/// gateway does for its own clients.
async fn place(orders: &Orders, store: &dyn Store, forwarded: ForwardedPlace) -> ForwardedOutcome {
    let (draft, idempotency) = forwarded.into_parts();
    let placed = store.place_order(draft, idempotency).await;
    if let Ok(PlaceOutcome::Created(created)) = &placed
        && let Err(error) = orders.placed(&created.order).await
    {
        // Durable already: the next command on the order starts it.
        tracing::warn!(order_id = created.order.id, %error, "Order actor not started");
    }
    ForwardedOutcome::of_place(placed)
}

/// Runs a forwarded transition on this node's order actor.
async fn run(orders: &Orders, forwarded: ForwardedTransition) -> ForwardedOutcome {
    let (Ok(role), Ok(action)) = (
        forwarded.role.parse::<Role>(),
        forwarded.action.parse::<Action>(),
    ) else {
        return ForwardedOutcome::Internal("unknown role or action".into());
    };
    let command = TransitionCommand {
        caller: Caller {
            user_id: forwarded.user_id,
            role,
            restaurant_id: forwarded.restaurant_id,
            driver_id: forwarded.driver_id,
        },
        action,
        expected_version: forwarded.expected_version,
        reason: forwarded.reason,
    };
    tracing::debug!(
        order_id = forwarded.order_id,
        action = action.as_str(),
        "Forwarded command"
    );
    ForwardedOutcome::of(orders.transition(forwarded.order_id, command).await)
}
