//! The current incarnation of a core actor. Handles hold the slot, not an
//! `ActorRef`, so that when the engine's supervisor restarts an actor
//! every holder reaches the new one, and while it is down every holder
//! finds out at once instead of casting into a dead mailbox.

use ractor::rpc::CallResult;
use ractor::{ActorRef, ActorStatus, Message, RpcReplyPort};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub(crate) struct Slot<M: Message> {
    current: Arc<RwLock<Option<ActorRef<M>>>>,
}

impl<M: Message> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Slot {
            current: self.current.clone(),
        }
    }
}

impl<M: Message> Slot<M> {
    /// A slot with no actor yet: every cast fails until [`Slot::fill`].
    pub(crate) fn empty() -> Self {
        Slot {
            current: Arc::new(RwLock::new(None)),
        }
    }

    pub(crate) fn fill(&self, actor: ActorRef<M>) {
        *self.write() = Some(actor);
    }

    /// Empties the slot if it still holds `actor` (a newer one stays).
    pub(crate) fn clear(&self, actor: &ractor::ActorCell) {
        let mut current = self.write();
        if current
            .as_ref()
            .is_some_and(|a| a.get_id() == actor.get_id())
        {
            *current = None;
        }
    }

    pub(crate) fn get(&self) -> Option<ActorRef<M>> {
        // A plain value behind the lock: a panic elsewhere cannot leave it
        // half written.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<ActorRef<M>>> {
        self.current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the actor is there and running.
    pub(crate) fn is_up(&self) -> bool {
        self.get()
            .is_some_and(|actor| actor.get_status() == ActorStatus::Running)
    }

    /// False when there is no actor to take the message.
    pub(crate) fn cast(&self, message: M) -> bool {
        self.get().is_some_and(|actor| actor.cast(message).is_ok())
    }

    /// The answer, or `None` if the actor is down or did not answer in time.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        message: impl FnOnce(RpcReplyPort<R>) -> M,
        timeout: Duration,
    ) -> Option<R> {
        let actor = self.get()?;
        match actor.call(message, Some(timeout)).await {
            Ok(CallResult::Success(answer)) => Some(answer),
            _ => None,
        }
    }
}
