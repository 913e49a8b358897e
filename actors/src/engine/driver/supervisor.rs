//! The driver supervisor: parent of every driver actor. It starts them (one
//! per driver, however many first messages race) and decides what a
//! driver actor's failure does: the actor is started again at once, fresh
//! (offline until its next position), and the orders it carried are
//! announced to it again by their order actors. The socket that held the
//! failed actor finds it gone and is closed, so the app reconnects to the
//! new one.

use super::actor::{DriverActor, DriverArguments, DriverMessage};
use crate::domain::model::{Driver, DriverId};
use crate::engine::breadcrumbs::BreadcrumbSink;
use crate::engine::config::EngineConfig;
use crate::engine::geo_actor::Geo;
use crate::metrics as m;
use dashmap::DashMap;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Told when a driver actor was started again after a failure, so the
/// orders it carried can be handed to the new one.
pub(crate) type OnRevived = OnceLock<Arc<dyn Fn(DriverId) + Send + Sync>>;

pub(crate) enum DriverSupervisorMessage {
    /// The actor of this driver, started unless it runs already.
    Start(Box<Driver>, RpcReplyPort<Option<ActorRef<DriverMessage>>>),
}

pub(crate) struct DriverSupervisor;

pub(crate) struct DriverSupervisorArguments {
    pub registry: Arc<DashMap<DriverId, ActorRef<DriverMessage>>>,
    pub geo: Geo,
    pub breadcrumbs: BreadcrumbSink,
    pub config: Arc<EngineConfig>,
    pub on_revived: Arc<OnRevived>,
    /// Who asked to be paused: a restarted actor keeps the setting.
    pub pauses: super::Pauses,
    /// Cluster mode: where each driver mirrors its entry for other nodes.
    pub bus: Arc<OnceLock<Arc<dyn super::DriverBus>>>,
}

pub(crate) struct DriverSupervisorState {
    args: DriverSupervisorArguments,
    /// Which driver each child is, with its profile for a restart.
    children: HashMap<ActorId, Driver>,
}

impl Actor for DriverSupervisor {
    type Msg = DriverSupervisorMessage;
    type State = DriverSupervisorState;
    type Arguments = DriverSupervisorArguments;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: DriverSupervisorArguments,
    ) -> Result<DriverSupervisorState, ActorProcessingErr> {
        // A restarted supervisor's children died with its predecessor.
        args.registry.clear();
        Ok(DriverSupervisorState {
            args,
            children: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: DriverSupervisorMessage,
        state: &mut DriverSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DriverSupervisorMessage::Start(profile, reply) => {
                let _ = reply.send(state.start(&myself, *profile).await);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut DriverSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure): (&ActorCell, Option<String>) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error.to_string())),
            _ => return Ok(()),
        };
        let Some(profile) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        let driver_id = profile.id;
        state
            .args
            .registry
            .remove_if(&driver_id, |_, actor| actor.get_id() == cell.get_id());
        // A driver actor stops only with the engine; anything else is a
        // failure, and the supervisor never stops because of a child.
        let Some(error) = failure else {
            return Ok(());
        };
        tracing::error!(driver_id, %error, "Driver actor failed; starting it again");
        metrics::counter!(m::ACTOR_RESTARTS_TOTAL, "actor" => "driver").increment(1);
        if state.start(&myself, profile).await.is_some()
            && let Some(revived) = state.args.on_revived.get()
        {
            revived(driver_id);
        }
        Ok(())
    }
}

impl DriverSupervisorState {
    async fn start(
        &mut self,
        myself: &ActorRef<DriverSupervisorMessage>,
        profile: Driver,
    ) -> Option<ActorRef<DriverMessage>> {
        if let Some(running) = self.args.registry.get(&profile.id) {
            return Some(running.clone());
        }
        let driver_id = profile.id;
        let args = DriverArguments {
            profile: profile.clone(),
            geo: self.args.geo.clone(),
            breadcrumbs: self.args.breadcrumbs.clone(),
            config: self.args.config.clone(),
            paused: self.args.pauses.get(driver_id),
            bus: self.args.bus.get().cloned(),
        };
        match Actor::spawn_linked(None, DriverActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.children.insert(actor.get_id(), profile);
                self.args.registry.insert(driver_id, actor.clone());
                Some(actor)
            }
            Err(error) => {
                tracing::error!(driver_id, %error, "Driver actor failed to start");
                None
            }
        }
    }
}
