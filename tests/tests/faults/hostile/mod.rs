//! Hostile input, while sagas run: payloads over the limits ([`oversized`]),
//! malformed JSON on every subject and route ([`malformed`]), hostile strings
//! in every input ([`strings`]), and calls without a valid token or beyond
//! their role ([`auth`]), well-formed messages on subjects where they do not
//! belong ([`bus`]). Each is refused cleanly (never a 5xx, never a crash), and
//! the sagas under way and those started after it all end.

mod api;
mod auth;
mod bus;
mod malformed;
mod oversized;
mod strings;

use crate::common::load::{Begun, Load, Make, Starter};
use crate::invariants::verify_with_bench;
use crate::load::{after_load, wait_ended};
use crate::tally::Tally;
use crate::world::{BENCH_DELAYED, TURN, World, sagas};
use api::Api;
use skald_tests::process::ChildGuard;
use skald_tests::{Delivery, NATS_URL, RunningOrchestrator};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A hostile-input scenario: its turn and world, an orchestrator in this
/// process, the API over its database, and the bench participant when the
/// scenario runs `flow`. The fields drop in order: processes first, the turn last.
struct Barrage {
    _bench: Option<ChildGuard>,
    api: Api,
    o: RunningOrchestrator,
    w: World,
    /// Sagas of load: 100 (CI) or 600.
    n: usize,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Barrage {
    /// The scenario on `definitions`, its commands and replies delivered as
    /// `delivery` says; with the bench participant (20 ms a command) when `bench`.
    async fn new(
        scenario: &'static str,
        definitions: &[(&str, &str)],
        bench: bool,
        delivery: Delivery,
    ) -> Self {
        let turn = TURN.lock().await;
        let mut w = World::new(scenario, NATS_URL, definitions).await;
        w.delivery = delivery;
        let bench = if bench { Some(w.bench_ready(BENCH_DELAYED).await) } else { None };
        let o = w.orchestrator().await;
        let api = Api::new(&w).await;
        Self { _bench: bench, api, o, w, n: sagas(100, 600), _turn: turn }
    }

    /// A client starting sagas on the orchestrator.
    fn starter(&self) -> Starter {
        self.w.starter(&self.o.client)
    }

    /// `total` sagas made by `make`, started 8 at a time.
    fn load(&self, total: usize, make: Make) -> Load {
        self.starter().load(total, 8, make)
    }

    /// The barrage is over: the load's sagas, `extra` ones and a fifth as
    /// many `flow` sagas started now all end. The sagas, and the time from the
    /// end of the barrage until every saga had ended.
    async fn after_barrage(&self, load: Load, extra: Vec<Begun>) -> (Vec<Begun>, Duration) {
        let barrage_over = Instant::now();
        let mut begun = load.finish().await;
        begun.extend(extra);
        begun.extend(self.load(self.n / 5, after_load()).finish().await);
        (begun, wait_ended(&self.o.store, barrage_over).await)
    }

    /// Invariants 1, 2, 5 and 6, and 5 at the bench participant; each saga's status.
    async fn verify(&self, begun: &[Begun], tally: &mut Tally) -> HashMap<String, String> {
        verify_with_bench(&self.o.store, &self.w.pdb_url, begun, tally).await
    }

    /// Stop the orchestrator, then end as every scenario does.
    async fn finish(mut self, tally: Tally, heal: Duration) {
        self.o.stop().await;
        self.w.finish(tally, heal);
    }
}
