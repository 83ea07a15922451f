//! The owner's cache of open sagas (`orchestrator::engine::cache`) through the driver,
//! on a real store and no NATS: commands are read from the outbox and answered
//! by the test. The cached state must always be the replay of the stored
//! history, and a write by anyone else must be noticed, never overwritten.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{BENCH, Engine, offline, take_commands};
use orchestrator::cluster::partitions::Ownership;
use orchestrator::engine::driver::{DriveError, Driver};
use orchestrator::store::Store;
use sagas::machine::{Input, SagaEvent};
use sagas::protocol::{Command, Outcome, Reply};
use serde_json::json;
use skald_testkit::Backend;

/// A driver of the `bench` saga over `store`, on `partitions` partitions.
async fn driver(store: &Store, partitions: u32) -> Driver {
    common::driver(store, &[BENCH], offline(), partitions).await
}

fn ok(command: &Command) -> Input {
    Input::Reply(Reply {
        command_id: command.command_id.clone(),
        attempt: command.attempt,
        outcome: Outcome::Ok { output: json!({ "step": command.step }) },
    })
}

/// The cache entry of an open saga equals what the store says.
async fn assert_cache_matches_store(driver: &Driver, saga_id: &str) {
    let (row, stored) = driver.state(saga_id).await.unwrap();
    match driver.cache().peek(saga_id) {
        Some(cached) => {
            assert_eq!(cached.seq, row.seq, "{saga_id}: cached seq");
            assert_eq!(cached.state, stored, "{saga_id}: cached state is the replay of the store");
        }
        None => assert!(stored.status.is_end(), "{saga_id}: an open saga is cached"),
    }
}

#[tokio::test]
async fn the_cached_state_is_always_the_replay_of_the_stored_history() {
    let engine = Engine::new(Backend::Sqlite, &[BENCH]).await;
    let (d, store) = (&engine.driver, &engine.store);
    let mut ids = Vec::new();
    for i in 0..10 {
        let started = d.start("bench", &format!("k{i}"), &json!({})).await.unwrap();
        ids.push(started.saga_id().to_owned());
    }
    for id in &ids {
        assert_cache_matches_store(d, id).await;
    }
    loop {
        let commands = take_commands(store).await;
        if commands.is_empty() {
            break;
        }
        for c in &commands {
            d.handle(&c.saga_id, &ok(c)).await.unwrap();
            assert_cache_matches_store(d, &c.saga_id).await;
        }
    }
    for id in &ids {
        assert_eq!(d.state(id).await.unwrap().1.status.as_str(), "completed");
    }
    assert!(d.cache().is_empty(), "ended sagas are not kept");
}

#[tokio::test]
async fn a_write_by_another_instance_makes_the_cache_reload_not_overwrite() {
    let engine = Engine::new(Backend::Sqlite, &[BENCH]).await;
    let (mine, store) = (&engine.driver, &engine.store);
    let other = driver(store, common::PARTITIONS).await;
    let id = mine.start("bench", "k", &json!({})).await.unwrap().saga_id().to_owned();
    let step_one = take_commands(store).await.remove(0);
    assert_eq!(mine.cache().peek(&id).unwrap().seq, 2);

    // Another instance (an operator's repair, a previous owner) writes first.
    let decision = other.handle(&id, &ok(&step_one)).await.unwrap();
    assert!(!decision.events.is_empty());
    assert_eq!(mine.cache().peek(&id).unwrap().seq, 2, "this instance did not see that write");

    // The same reply again (redelivered): the stale cache would accept it;
    // its append conflicts, the saga is reloaded and the reply absorbed.
    let again = mine.handle(&id, &ok(&step_one)).await.unwrap();
    assert!(again.events.is_empty(), "absorbed: {:?}", again.events);
    let history = store.load(&id).await.unwrap().unwrap().events;
    let succeeded = history.iter().filter(|e| matches!(e, SagaEvent::StepSucceeded { .. })).count();
    assert_eq!(succeeded, 1, "the reply was recorded once");
    assert_cache_matches_store(mine, &id).await;

    // A reply only the stored history knows about (step two's command, sent
    // by the other instance's write): the cache is refreshed and it applies.
    let step_two = take_commands(store).await.remove(0);
    assert_eq!(step_two.step, "two");
    other.handle(&id, &ok(&step_two)).await.unwrap();
    let step_three = take_commands(store).await.remove(0);
    let decision = mine.handle(&id, &ok(&step_three)).await.unwrap();
    assert!(decision.events.iter().any(|e| matches!(e, SagaEvent::SagaCompleted { .. })));
    assert_eq!(mine.state(&id).await.unwrap().1.status.as_str(), "completed");
}

#[tokio::test]
async fn a_lost_partition_drops_its_cache_and_a_new_epoch_reads_the_store() {
    let (_db, store) = common::store(Backend::Sqlite).await;
    let store = &store;
    store.ensure_cluster(1).await.unwrap();
    let now = store.clock().now_db();
    let ttl = 5_000;
    let first = store.acquire(0, "me", now, ttl).await.unwrap().unwrap();
    let me = Ownership::cluster("me");
    me.insert(0, first);
    let mine = driver(store, 1).await.with_ownership(me.clone());
    let id = mine.start("bench", "k", &json!({})).await.unwrap().saga_id().to_owned();
    let step_one = take_commands(store).await.remove(0);
    assert_eq!(mine.cache().peek(&id).unwrap().epoch, first);

    // The lease expires and another instance takes the partition over.
    let later = now + 2 * ttl;
    let theirs = store.acquire(0, "it", later, ttl).await.unwrap().unwrap();
    assert!(me.lose(0, first));
    let it = Ownership::cluster("it");
    it.insert(0, theirs);
    let other = driver(store, 1).await.with_ownership(it);
    let refused = mine.handle(&id, &ok(&step_one)).await;
    assert!(matches!(refused, Err(DriveError::NotOwner { partition: 0 })), "{refused:?}");
    assert!(mine.cache().peek(&id).is_none(), "an entry of a partition not held is dropped");
    other.handle(&id, &ok(&step_one)).await.unwrap();

    // This instance takes the partition back at a new epoch: it reads the
    // store (where the other owner's write is), so the duplicate is absorbed.
    let back = store.acquire(0, "me", later + 2 * ttl, ttl).await.unwrap().unwrap();
    assert!(back > theirs);
    me.insert(0, back);
    let again = mine.handle(&id, &ok(&step_one)).await.unwrap();
    assert!(again.events.is_empty(), "absorbed: {:?}", again.events);
    assert_eq!(mine.cache().peek(&id).unwrap().epoch, back);
    assert_cache_matches_store(&mine, &id).await;

    // What the membership loop's `Lost` does: every entry of the partition goes.
    mine.forget_partition(0);
    assert!(mine.cache().is_empty());
}
