//! The order supervisor: parent of every order actor. It starts them (one
//! per live order, however many callers race) and decides what an order
//! actor's failure does: the actor leaves the directory, its feed (the
//! watchers) is kept aside, and the order is read back from the store and
//! started again at once, adopting that feed so its watchers carry on with
//! a fresh snapshot. If the store cannot be read just then, the next
//! command on the order revives it the same way.

use super::actor::{OrderActor, OrderArguments};
use super::feed::OrderFeed;
use super::{LiveOrder, OrderEntry, OrderListener};
use crate::domain::model::OrderId;
use crate::engine::config::EngineConfig;
use crate::engine::eta_writer::EtaWrites;
use crate::metrics as m;
use crate::store::Store;
use dashmap::DashMap;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) enum OrderSupervisorMessage {
    /// Start the actor of an order unless it runs already; reply with it.
    Start(Box<LiveOrder>, RpcReplyPort<Option<OrderEntry>>),
}

pub(crate) struct OrderSupervisor;

pub(crate) struct OrderSupervisorArguments {
    pub registry: Arc<DashMap<OrderId, OrderEntry>>,
    /// Feeds of failed actors, waiting for their order's next actor.
    pub orphans: Arc<DashMap<OrderId, Arc<OrderFeed>>>,
    pub store: Arc<dyn Store>,
    pub listener: Arc<dyn OrderListener>,
    pub config: Arc<EngineConfig>,
    pub eta_writes: EtaWrites,
    /// Cluster mode: what new feeds publish to.
    pub bus: Arc<std::sync::OnceLock<Arc<dyn super::bus::OrderBus>>>,
    /// Reads a failed actor's order back and starts it again.
    pub revive: Arc<dyn Fn(OrderId) + Send + Sync>,
}

pub(crate) struct OrderSupervisorState {
    args: OrderSupervisorArguments,
    children: HashMap<ActorId, OrderId>,
}

impl Actor for OrderSupervisor {
    type Msg = OrderSupervisorMessage;
    type State = OrderSupervisorState;
    type Arguments = OrderSupervisorArguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: OrderSupervisorArguments,
    ) -> Result<OrderSupervisorState, ActorProcessingErr> {
        // A restarted supervisor's children died with its predecessor:
        // keep their feeds for the actors recovery is about to start.
        let dead: Vec<OrderId> = args.registry.iter().map(|e| *e.key()).collect();
        for order_id in dead {
            if let Some((_, entry)) = args.registry.remove(&order_id) {
                entry.feed.track(None);
                args.orphans.insert(order_id, entry.feed);
            }
        }
        Ok(OrderSupervisorState {
            args,
            children: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: OrderSupervisorMessage,
        state: &mut OrderSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            OrderSupervisorMessage::Start(order, reply) => {
                let _ = reply.send(state.start(&myself, *order).await);
            }
        }
        Ok(())
    }

    /// A child that stops (its order became terminal) or fails leaves the
    /// directory; the supervisor never stops because of a child.
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut OrderSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure): (&ActorCell, Option<String>) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error.to_string())),
            _ => return Ok(()),
        };
        let Some(order_id) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        let removed = state
            .args
            .registry
            .remove_if(&order_id, |_, live| live.order.same_actor(cell));
        // The driver may still hold the feed: its watchers would hear
        // positions but no status, so no more positions go there until
        // the order has an actor again.
        if let Some((_, live)) = &removed {
            live.feed.track(None);
        }
        let Some(error) = failure else {
            return Ok(());
        };
        tracing::error!(order_id, %error, "Order actor failed; starting it again from the store");
        metrics::counter!(m::ACTOR_RESTARTS_TOTAL, "actor" => "order").increment(1);
        if let Some((_, live)) = removed {
            state.args.orphans.insert(order_id, live.feed);
        }
        // The read happens off this actor, which never waits on the store.
        (state.args.revive)(order_id);
        Ok(())
    }
}

impl OrderSupervisorState {
    async fn start(
        &mut self,
        myself: &ActorRef<OrderSupervisorMessage>,
        live: LiveOrder,
    ) -> Option<OrderEntry> {
        if let Some(running) = self.args.registry.get(&live.order.id) {
            return Some(running.clone());
        }
        let order_id = live.order.id;
        if live.order.status.is_terminal() {
            self.args.orphans.remove(&order_id);
            return None;
        }
        let config = &self.args.config;
        let adopted = self.args.orphans.remove(&order_id).map(|(_, feed)| feed);
        let is_adopted = adopted.is_some();
        let feed = adopted.unwrap_or_else(|| {
            Arc::new(
                OrderFeed::new(
                    order_id,
                    &live.restaurant,
                    config.road_factor,
                    config.eta_push_threshold,
                    config.arrivals,
                )
                .with_bus(self.args.bus.get().cloned()),
            )
        });
        let restaurant_at = live.restaurant.location;
        let args = OrderArguments {
            order: live.order,
            restaurant: live.restaurant,
            driver: live.driver,
            store: self.args.store.clone(),
            listener: self.args.listener.clone(),
            config: config.clone(),
            feed: feed.clone(),
            eta_writes: self.args.eta_writes.clone(),
            adopted: is_adopted,
        };
        match Actor::spawn_linked(None, OrderActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.children.insert(actor.get_id(), order_id);
                let entry = OrderEntry {
                    order: super::OrderRef::new(actor, order_id),
                    feed,
                    restaurant_at,
                };
                self.args.registry.insert(order_id, entry.clone());
                Some(entry)
            }
            Err(error) => {
                tracing::error!(order_id, %error, "Order actor failed to start");
                if is_adopted {
                    self.args.orphans.insert(order_id, feed);
                }
                None
            }
        }
    }
}
