//! Signing the simulated parties in: demo accounts first, then registered
//! `sim-*@sim.local` accounts for whoever the demo does not have.
//!
//! Password hashing is slow on purpose server-side, so sign-ins run a few at
//! a time; and logins are rate-limited per email, so each account signs in
//! exactly once per run.

use super::api::{Api, Session};
use super::stats::Stats;
use crate::demo;
use futures::StreamExt;

pub const SIM_PASSWORD: &str = "sim-pass-123";

/// An account to sign in.
#[derive(Debug, Clone)]
pub enum Who {
    /// A demo account: log in.
    Demo { email: String },
    /// A simulator account: register it, or log in when it exists already.
    Sim {
        email: String,
        name: String,
        role: &'static str,
    },
}

/// The `n` drivers (or customers): `driver1..` of the demo, then
/// `sim-driver-{i}@sim.local` for i past the demo's count.
pub fn people(role: &'static str, n: usize) -> Vec<Who> {
    let demo_count = match role {
        "driver" => demo::DRIVERS,
        _ => demo::CUSTOMERS,
    };
    (1..=n)
        .map(|i| {
            if i <= demo_count {
                Who::Demo {
                    email: format!("{role}{i}@demo.local"),
                }
            } else {
                Who::Sim {
                    email: format!("sim-{role}-{i}@sim.local"),
                    name: format!("Sim {role} {i}"),
                    role,
                }
            }
        })
        .collect()
}

/// The staff account of demo restaurant `id`.
pub fn staff(id: i64) -> Who {
    Who::Demo {
        email: format!("restaurant{id}@demo.local"),
    }
}

/// Signs in everyone in `who`, each at the node given with it,
/// `concurrency` at a time; the result is in the same order, `None` where
/// it failed (counted in `stats`).
pub async fn sign_in_all(
    who: Vec<(&Api, Who)>,
    concurrency: usize,
    stats: &Stats,
) -> Vec<Option<Session>> {
    futures::stream::iter(who)
        .map(|(api, who)| sign_in(api, who, stats))
        .buffered(concurrency.max(1))
        .collect()
        .await
}

async fn sign_in(api: &Api, who: Who, stats: &Stats) -> Option<Session> {
    let result = match &who {
        Who::Demo { email } => api.login(email, demo::PASSWORD).await,
        Who::Sim { email, name, role } => {
            match api.register(email, SIM_PASSWORD, name, role).await {
                Err(failure) if failure.code == "EMAIL_TAKEN" => {
                    api.login(email, SIM_PASSWORD).await
                }
                other => other,
            }
        }
    };
    match result {
        Ok(session) => Some(session),
        Err(failure) => {
            let email = match &who {
                Who::Demo { email } | Who::Sim { email, .. } => email,
            };
            stats.error(&failure.code, || format!("signing in {email}: {failure}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_accounts_come_first_then_sim_accounts() {
        let drivers = people("driver", demo::DRIVERS + 2);
        assert!(matches!(&drivers[0], Who::Demo { email } if email == "driver1@demo.local"));
        assert!(
            matches!(&drivers[demo::DRIVERS], Who::Sim { email, role: "driver", .. }
                if *email == format!("sim-driver-{}@sim.local", demo::DRIVERS + 1))
        );
        let customers = people("customer", demo::CUSTOMERS + 1);
        assert!(matches!(&customers[demo::CUSTOMERS], Who::Sim { email, .. }
                if *email == format!("sim-customer-{}@sim.local", demo::CUSTOMERS + 1)));
    }
}
