//! The order state machine: which action moves an order from which status to
//! which, and who may take it (CONTRACT.md "Order transitions").
//!
//! Pure functions: the order actor asks [`decide`] before it writes anything.

use crate::domain::model::{Caller, Order, OrderStatus, Role};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Confirm,
    StartPreparing,
    MarkReady,
    PickUp,
    Deliver,
    Cancel,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Confirm,
        Action::StartPreparing,
        Action::MarkReady,
        Action::PickUp,
        Action::Deliver,
        Action::Cancel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Confirm => "confirm",
            Action::StartPreparing => "start_preparing",
            Action::MarkReady => "mark_ready",
            Action::PickUp => "pick_up",
            Action::Deliver => "deliver",
            Action::Cancel => "cancel",
        }
    }

    /// The status this action leads to.
    pub fn target(self) -> OrderStatus {
        match self {
            Action::Confirm => OrderStatus::Confirmed,
            Action::StartPreparing => OrderStatus::Preparing,
            Action::MarkReady => OrderStatus::ReadyForPickup,
            Action::PickUp => OrderStatus::PickedUp,
            Action::Deliver => OrderStatus::Delivered,
            Action::Cancel => OrderStatus::Cancelled,
        }
    }
}

impl FromStr for Action {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == s)
            .ok_or(())
    }
}

/// Why a transition was refused. The gateway maps each to a CONTRACT.md code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The caller may not see this order at all (answered as 404).
    #[error("order not found")]
    NotVisible,
    /// The caller sees the order but their role may not take this action.
    #[error("{role} may not {action} this order")]
    Forbidden { role: Role, action: &'static str },
    /// The action is not allowed from the order's current status.
    #[error("cannot {action} an order that is {from}")]
    InvalidTransition {
        action: &'static str,
        from: OrderStatus,
    },
    /// `pick_up` with no driver assigned yet.
    #[error("the order has no assigned driver")]
    NoDriverAssigned,
    #[error("expected version {expected}, the order is at version {actual}")]
    VersionConflict { expected: i64, actual: i64 },
}

/// Who may see an order: its customer, its restaurant's staff, its assigned
/// driver, admins.
pub fn can_see(order: &Order, caller: &Caller) -> bool {
    match caller.role {
        Role::Admin => true,
        Role::Customer => order.customer_id == caller.user_id,
        Role::Restaurant => caller.restaurant_id == Some(order.restaurant_id),
        Role::Driver => order.driver_id.is_some() && order.driver_id == caller.driver_id,
    }
}

/// Whether the order waits for a driver: from CONFIRMED until one is
/// assigned (CONTRACT.md "Dispatch"). The dispatcher offers only these and
/// the order actor assigns only these.
pub fn awaits_driver(order: &Order) -> bool {
    order.driver_id.is_none()
        && matches!(
            order.status,
            OrderStatus::Confirmed | OrderStatus::Preparing | OrderStatus::ReadyForPickup
        )
}

/// Statuses an action may start from.
fn allowed_from(action: Action, role: Role) -> &'static [OrderStatus] {
    use OrderStatus::*;
    match action {
        Action::Confirm => &[Placed],
        Action::StartPreparing => &[Confirmed],
        Action::MarkReady => &[Preparing],
        Action::PickUp => &[ReadyForPickup],
        Action::Deliver => &[PickedUp],
        Action::Cancel => match role {
            Role::Customer => &[Placed],
            Role::Restaurant => &[Placed, Confirmed, Preparing, ReadyForPickup],
            _ => &[Placed, Confirmed, Preparing, ReadyForPickup, PickedUp],
        },
    }
}

/// Whether `role` may take `action` at all (for an order it can see).
fn role_may(action: Action, role: Role) -> bool {
    match action {
        Action::Confirm | Action::StartPreparing | Action::MarkReady => {
            matches!(role, Role::Restaurant | Role::Admin)
        }
        Action::PickUp | Action::Deliver => matches!(role, Role::Driver | Role::Admin),
        Action::Cancel => matches!(role, Role::Customer | Role::Restaurant | Role::Admin),
    }
}

/// Decides a transition: the status it leads to, or why not. Checks, in order,
/// visibility (404 beats everything), the role, the version, the status.
pub fn decide(
    order: &Order,
    caller: &Caller,
    action: Action,
    expected_version: Option<i64>,
) -> Result<OrderStatus, Refusal> {
    if !can_see(order, caller) {
        return Err(Refusal::NotVisible);
    }
    if !role_may(action, caller.role) {
        return Err(Refusal::Forbidden {
            role: caller.role,
            action: action.as_str(),
        });
    }
    if let Some(expected) = expected_version
        && expected != order.version
    {
        return Err(Refusal::VersionConflict {
            expected,
            actual: order.version,
        });
    }
    if !allowed_from(action, caller.role).contains(&order.status) {
        return Err(Refusal::InvalidTransition {
            action: action.as_str(),
            from: order.status,
        });
    }
    if action == Action::PickUp && order.driver_id.is_none() {
        return Err(Refusal::NoDriverAssigned);
    }
    Ok(action.target())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::DeliveryAddress;
    use chrono::Utc;

    pub(crate) fn order(status: OrderStatus, driver: Option<i64>) -> Order {
        Order {
            id: 1,
            customer_id: 10,
            restaurant_id: 20,
            driver_id: driver,
            status,
            version: 3,
            subtotal_cents: 1000,
            delivery_fee_cents: 299,
            service_fee_cents: 150,
            total_cents: 1449,
            delivery_address: DeliveryAddress {
                street: "1 Main St".into(),
                city: "Austin".into(),
                state: "TX".into(),
                zip: "78701".into(),
                lat: 30.0,
                lon: -97.0,
                instructions: None,
            },
            estimated_delivery_at: None,
            placed_at: Utc::now(),
            confirmed_at: None,
            preparing_at: None,
            ready_at: None,
            picked_up_at: None,
            delivered_at: None,
            cancelled_at: None,
            cancel_reason: None,
        }
    }

    fn caller(role: Role, user_id: i64) -> Caller {
        Caller {
            user_id,
            role,
            restaurant_id: (role == Role::Restaurant).then_some(20),
            driver_id: (role == Role::Driver).then_some(user_id),
        }
    }

    const CUSTOMER: i64 = 10;
    const DRIVER: i64 = 30;

    #[test]
    fn an_order_awaits_a_driver_from_confirmed_until_one_is_assigned() {
        use OrderStatus::*;
        for status in [Confirmed, Preparing, ReadyForPickup] {
            assert!(awaits_driver(&order(status, None)), "{status:?}");
            assert!(!awaits_driver(&order(status, Some(DRIVER))), "{status:?}");
        }
        for status in [Placed, PickedUp, Delivered, Cancelled] {
            assert!(!awaits_driver(&order(status, None)), "{status:?}");
        }
    }

    #[test]
    fn happy_path_walks_every_status_in_order() {
        let staff = caller(Role::Restaurant, 99);
        let driver = caller(Role::Driver, DRIVER);
        let steps = [
            (Action::Confirm, &staff, OrderStatus::Placed),
            (Action::StartPreparing, &staff, OrderStatus::Confirmed),
            (Action::MarkReady, &staff, OrderStatus::Preparing),
            (Action::PickUp, &driver, OrderStatus::ReadyForPickup),
            (Action::Deliver, &driver, OrderStatus::PickedUp),
        ];
        for (action, who, from) in steps {
            let target = decide(&order(from, Some(DRIVER)), who, action, None).unwrap();
            assert_eq!(target, action.target());
        }
    }

    #[test]
    fn every_action_from_every_status_by_every_role_matches_the_contract_table() {
        use OrderStatus::*;
        // (action, role) -> statuses it may start from, straight from CONTRACT.md.
        let table: &[(Action, Role, &[OrderStatus])] = &[
            (Action::Confirm, Role::Restaurant, &[Placed]),
            (Action::Confirm, Role::Admin, &[Placed]),
            (Action::StartPreparing, Role::Restaurant, &[Confirmed]),
            (Action::StartPreparing, Role::Admin, &[Confirmed]),
            (Action::MarkReady, Role::Restaurant, &[Preparing]),
            (Action::MarkReady, Role::Admin, &[Preparing]),
            (Action::PickUp, Role::Driver, &[ReadyForPickup]),
            (Action::PickUp, Role::Admin, &[ReadyForPickup]),
            (Action::Deliver, Role::Driver, &[PickedUp]),
            (Action::Deliver, Role::Admin, &[PickedUp]),
            (Action::Cancel, Role::Customer, &[Placed]),
            (
                Action::Cancel,
                Role::Restaurant,
                &[Placed, Confirmed, Preparing, ReadyForPickup],
            ),
            (
                Action::Cancel,
                Role::Admin,
                &[Placed, Confirmed, Preparing, ReadyForPickup, PickedUp],
            ),
        ];
        let roles = [Role::Customer, Role::Driver, Role::Restaurant, Role::Admin];
        for action in Action::ALL {
            for role in roles {
                let who = caller(
                    role,
                    if role == Role::Driver {
                        DRIVER
                    } else {
                        CUSTOMER
                    },
                );
                let allowed = table
                    .iter()
                    .find(|(a, r, _)| *a == action && *r == role)
                    .map(|(_, _, from)| *from)
                    .unwrap_or(&[]);
                for status in OrderStatus::ALL {
                    let result = decide(&order(status, Some(DRIVER)), &who, action, None);
                    if allowed.contains(&status) {
                        assert_eq!(
                            result,
                            Ok(action.target()),
                            "{action:?} {role:?} {status:?}"
                        );
                    } else {
                        assert!(result.is_err(), "{action:?} by {role:?} from {status:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn customer_cannot_see_another_customers_order() {
        let stranger = caller(Role::Customer, 11);
        let refused = decide(
            &order(OrderStatus::Placed, None),
            &stranger,
            Action::Cancel,
            None,
        );
        assert_eq!(refused, Err(Refusal::NotVisible));
    }

    #[test]
    fn staff_of_another_restaurant_cannot_see_the_order() {
        let mut other = caller(Role::Restaurant, 99);
        other.restaurant_id = Some(21);
        assert!(!can_see(&order(OrderStatus::Placed, None), &other));
    }

    #[test]
    fn only_the_assigned_driver_sees_the_order() {
        let unassigned = order(OrderStatus::ReadyForPickup, None);
        assert!(!can_see(&unassigned, &caller(Role::Driver, DRIVER)));
        let assigned = order(OrderStatus::ReadyForPickup, Some(DRIVER));
        assert!(can_see(&assigned, &caller(Role::Driver, DRIVER)));
        assert!(!can_see(&assigned, &caller(Role::Driver, DRIVER + 1)));
    }

    #[test]
    fn pick_up_needs_an_assigned_driver() {
        let admin = caller(Role::Admin, 1);
        let refused = decide(
            &order(OrderStatus::ReadyForPickup, None),
            &admin,
            Action::PickUp,
            None,
        );
        assert_eq!(refused, Err(Refusal::NoDriverAssigned));
    }

    #[test]
    fn customer_cannot_confirm_their_own_order() {
        let owner = caller(Role::Customer, CUSTOMER);
        let refused = decide(
            &order(OrderStatus::Placed, None),
            &owner,
            Action::Confirm,
            None,
        );
        assert!(matches!(refused, Err(Refusal::Forbidden { .. })));
    }

    #[test]
    fn stale_expected_version_is_a_conflict() {
        let admin = caller(Role::Admin, 1);
        let refused = decide(
            &order(OrderStatus::Placed, None),
            &admin,
            Action::Confirm,
            Some(2),
        );
        assert_eq!(
            refused,
            Err(Refusal::VersionConflict {
                expected: 2,
                actual: 3
            })
        );
        assert!(
            decide(
                &order(OrderStatus::Placed, None),
                &admin,
                Action::Confirm,
                Some(3)
            )
            .is_ok()
        );
    }

    #[test]
    fn actions_parse_from_their_wire_names_only() {
        for action in Action::ALL {
            assert_eq!(action.as_str().parse(), Ok(action));
        }
        assert!("CONFIRM".parse::<Action>().is_err());
        assert!("".parse::<Action>().is_err());
    }
}
