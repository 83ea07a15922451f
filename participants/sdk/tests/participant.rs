//! The SDK against real NATS JetStream and real SQLite / PostgreSQL databases:
//! the orchestrator's side is played by the test, which publishes commands to
//! the commands stream and reads the replies stream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backend, Harness, effect, write_effect};
use futures::future::BoxFuture;
use sagas::protocol::{
    Command, Effect, EffectState, InspectRequest, InspectResponse, InspectSaga, InspectedCommand,
    Kind, Outcome, Reply,
};
use serde_json::json;
use skald_participant::{
    Config, Effects, Handler, HandlerCtx, HandlerError, HandlerResult, InspectCtx, Participant,
    handler,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Runs each listed scenario on SQLite, on PostgreSQL, and on SQLite with group commit.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await } )*
        }
        mod sqlite_group_commit {
            $( #[tokio::test] async fn $name() { super::$name(super::Backend::SqliteGrouped).await } )*
        }
    };
}

on_both_backends!(
    happy_path_commits_the_effect_with_its_inbox_row,
    a_duplicate_gets_the_stored_reply_and_the_handler_runs_once,
    an_undo_before_its_do_leaves_a_tombstone_that_refuses_the_do,
    a_refusal_rolls_back_the_effect_and_is_stored_and_repeated,
    a_retry_is_not_stored_and_the_next_attempt_runs_again,
    a_panicking_handler_is_retried_then_refused,
    malformed_commands_are_terminated_and_the_participant_keeps_working,
    an_unknown_action_is_refused_and_stored,
    replicas_share_the_consumer_and_no_command_runs_twice,
    an_inspection_tells_the_inbox_and_the_inspectors_effects,
    commit_now_stays_whatever_the_answer,
);

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// A handler running `body` with a clone of `state` (counters, a
/// connection) for each call.
fn handler_with<S, F>(state: S, body: F) -> impl Handler
where
    S: Clone + Send + Sync + 'static,
    F: for<'a> Fn(HandlerCtx<'a>, S) -> BoxFuture<'a, HandlerResult> + Send + Sync + 'static,
{
    handler(move |ctx| body(ctx, state.clone()))
}

/// A handler that counts its calls, writes one effect noted `note` in the
/// SDK's transaction, and then answers what `answer` makes of the call's
/// number (0 for the first) and the command.
fn counted(
    calls: &Arc<AtomicUsize>,
    note: &'static str,
    answer: impl Fn(usize, &Command) -> HandlerResult + Send + Sync + 'static,
) -> impl Handler {
    handler_with((Arc::clone(calls), Arc::new(answer)), move |ctx, (calls, answer)| {
        Box::pin(async move {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            write_effect(&ctx, note).await?;
            answer(call, ctx.command())
        })
    })
}

/// A participant whose `work` action is `counted`.
fn working_participant(
    calls: &Arc<AtomicUsize>,
    note: &'static str,
    answer: impl Fn(usize, &Command) -> HandlerResult + Send + Sync + 'static,
) -> Participant {
    working_on(counted(calls, note, answer))
}

/// A participant with one action, `work`, run by `handler`.
fn working_on(handler: impl Handler) -> Participant {
    Participant::new(common::NAME).action("work", handler)
}

/// A participant whose `work` action writes one effect, counts its calls and
/// answers with the command id.
fn counting_participant(calls: &Arc<AtomicUsize>) -> Participant {
    working_participant(calls, "work", |_, command| Ok(json!({ "done": command.command_id })))
}

/// A harness running [`counting_participant`], and its call counter.
async fn counting(backend: Backend) -> (Harness, Arc<AtomicUsize>) {
    let mut h = Harness::new(backend).await;
    let calls = counter();
    h.start(counting_participant(&calls), h.config());
    (h, calls)
}

async fn happy_path_commits_the_effect_with_its_inbox_row(backend: Backend) {
    let (mut h, _calls) = counting(backend).await;

    let cmd = h.wire.command("s1", "one", Kind::Do, "work", 1);
    h.send(&cmd).await;
    let (reply, reply_id, traceparent) = h.reply_with_headers().await;

    let output = json!({ "done": cmd.command_id });
    assert_eq!(
        reply,
        Reply {
            command_id: cmd.command_id.clone(),
            attempt: 1,
            outcome: Outcome::Ok { output: output.clone() }
        }
    );
    assert_eq!(reply_id, format!("{}/1/reply", cmd.command_id));
    assert_eq!(traceparent, Harness::TRACEPARENT, "trace context passed on");
    assert_eq!(h.effects(&cmd.command_id).await, 1);
    let row = h.inbox_row(&cmd.command_id).await.expect("inbox row written");
    assert_eq!((row.saga_id.as_str(), row.step.as_str(), row.kind.as_str()), ("s1", "one", "do"));
    assert_eq!(row.outcome().unwrap(), Outcome::Ok { output });
    h.stop().await;
}

async fn a_duplicate_gets_the_stored_reply_and_the_handler_runs_once(backend: Backend) {
    let (mut h, calls) = counting(backend).await;

    let first = h.wire.command("s1", "one", Kind::Do, "work", 1);
    h.send(&first).await;
    let original = h.wire.reply().await;
    for attempt in [2, 3] {
        let again = h.wire.command("s1", "one", Kind::Do, "work", attempt);
        h.send(&again).await;
        let reply = h.wire.reply().await;
        assert_eq!(reply.attempt, attempt, "a duplicate is answered for its own attempt");
        assert_eq!(reply.outcome, original.outcome);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(h.effects(&first.command_id).await, 1);
    h.stop().await;
}

async fn an_undo_before_its_do_leaves_a_tombstone_that_refuses_the_do(backend: Backend) {
    let mut h = Harness::new(backend).await;
    let (dos, undos) = (counter(), counter());
    let participant = Participant::new(common::NAME)
        .action("work", counted(&dos, "work", |_, _| Ok(json!({}))))
        .compensation("unwork", counted(&undos, "unwork", |_, _| Ok(json!({}))));
    h.start(participant, h.config());

    let undo = h.wire.command("s1", "one", Kind::Undo, "unwork", 1);
    h.send(&undo).await;
    assert_eq!(h.wire.reply().await.outcome, Outcome::Ok { output: json!({ "tombstone": true }) });

    let late_do = h.wire.command("s1", "one", Kind::Do, "work", 1);
    h.send(&late_do).await;
    match h.wire.reply().await.outcome {
        Outcome::Failed { code, .. } => assert_eq!(code, "tombstoned"),
        other => panic!("the late do must be refused, got {other:?}"),
    }

    // The undo's retry is answered from the inbox, still without a handler call.
    h.send(&h.wire.command("s1", "one", Kind::Undo, "unwork", 2)).await;
    assert_eq!(h.wire.reply().await.outcome, Outcome::Ok { output: json!({ "tombstone": true }) });

    assert_eq!((dos.load(Ordering::SeqCst), undos.load(Ordering::SeqCst)), (0, 0));
    assert_eq!(h.all_effects().await, 0);
    assert!(h.inbox_row(&undo.command_id).await.is_some());
    assert!(h.inbox_row(&late_do.command_id).await.is_some());
    h.stop().await;
}

async fn a_refusal_rolls_back_the_effect_and_is_stored_and_repeated(backend: Backend) {
    let mut h = Harness::new(backend).await;
    let calls = counter();
    let participant = working_participant(&calls, "half-done", |_, _| {
        Err(HandlerError::failed("insufficient_funds", "balance 5 < 10"))
    });
    h.start(participant, h.config());

    let cmd = h.wire.command("s1", "one", Kind::Do, "work", 1);
    h.send(&cmd).await;
    let refused =
        Outcome::Failed { code: "insufficient_funds".into(), message: "balance 5 < 10".into() };
    assert_eq!(h.wire.reply().await.outcome, refused);
    assert_eq!(h.effects(&cmd.command_id).await, 0, "the refused handler's write rolled back");
    assert_eq!(h.inbox_row(&cmd.command_id).await.unwrap().outcome().unwrap(), refused);

    h.send(&h.wire.command("s1", "one", Kind::Do, "work", 2)).await;
    assert_eq!(h.wire.reply().await.outcome, refused);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    h.stop().await;
}

async fn a_retry_is_not_stored_and_the_next_attempt_runs_again(backend: Backend) {
    let mut h = Harness::new(backend).await;
    let calls = counter();
    let participant = working_participant(&calls, "work", |call, _| match call {
        0 => Err(HandlerError::retry("psp_unavailable", "HTTP 503")),
        1 => Err(HandlerError::unsent("psp_unreachable", "connection refused")),
        _ => Ok(json!({ "call": call })),
    });
    h.start(participant, h.config());

    let cmd = h.wire.command("s1", "one", Kind::Do, "work", 1);
    h.send(&cmd).await;
    assert_eq!(h.wire.reply().await.outcome, Outcome::retry("psp_unavailable", "HTTP 503"));
    assert!(h.inbox_row(&cmd.command_id).await.is_none(), "a retry is not stored");
    assert_eq!(h.effects(&cmd.command_id).await, 0);

    // Nothing sent: a retry marked so, not stored either.
    h.send(&h.wire.command("s1", "one", Kind::Do, "work", 2)).await;
    let unsent = Outcome::Retry {
        code: "psp_unreachable".into(),
        message: "connection refused".into(),
        unsent: true,
    };
    assert_eq!(h.wire.reply().await.outcome, unsent);
    assert!(h.inbox_row(&cmd.command_id).await.is_none(), "an unsent retry is not stored");

    h.send(&h.wire.command("s1", "one", Kind::Do, "work", 3)).await;
    assert_eq!(h.wire.reply().await.outcome, Outcome::Ok { output: json!({ "call": 2 }) });
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(h.effects(&cmd.command_id).await, 1);
    h.stop().await;
}

async fn a_panicking_handler_is_retried_then_refused(backend: Backend) {
    let mut h = Harness::new(backend).await;
    let calls = counter();
    let participant =
        working_participant(&calls, "before the panic", |_, _| panic!("bug in the handler"));
    let mut config = h.config();
    config.panic_retries_max = 2;
    h.start(participant, config);

    for attempt in 1..=2 {
        h.send(&h.wire.command("s1", "one", Kind::Do, "work", attempt)).await;
        match h.wire.reply().await.outcome {
            Outcome::Retry { code, message, .. } => {
                assert_eq!(code, "handler_panicked");
                assert!(message.contains("bug in the handler"), "{message}");
            }
            other => panic!("attempt {attempt}: expected retry, got {other:?}"),
        }
    }
    for attempt in 3..=4 {
        h.send(&h.wire.command("s1", "one", Kind::Do, "work", attempt)).await;
        match h.wire.reply().await.outcome {
            Outcome::Failed { code, .. } => assert_eq!(code, "handler_panicked"),
            other => panic!("attempt {attempt}: expected failed, got {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "the stored refusal answers attempt 4");
    let id = h.wire.command("s1", "one", Kind::Do, "work", 1).command_id;
    assert_eq!(h.effects(&id).await, 0);
    h.stop().await;
}

async fn malformed_commands_are_terminated_and_the_participant_keeps_working(backend: Backend) {
    let (mut h, calls) = counting(backend).await;

    h.wire.send_raw("work", b"{ this is not json").await;
    let mut wrong_id = h.wire.command("s1", "one", Kind::Do, "work", 1);
    wrong_id.command_id = "s1.other.do".into();
    h.wire.send_raw("work", &serde_json::to_vec(&wrong_id).unwrap()).await;
    let good = h.wire.command("s2", "one", Kind::Do, "work", 1);
    h.send(&good).await;

    let reply = h.wire.reply().await;
    assert_eq!(reply.command_id, good.command_id);
    assert!(matches!(reply.outcome, Outcome::Ok { .. }));
    // All three were settled (two terminated, one acked), none is pending.
    let mut info = h.wire.consumer_info().await;
    for _ in 0..50 {
        if info.num_ack_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        info = h.wire.consumer_info().await;
    }
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
    assert_eq!(info.delivered.stream_sequence, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    h.stop().await;
}

async fn an_unknown_action_is_refused_and_stored(backend: Backend) {
    let (mut h, _calls) = counting(backend).await;

    let cmd = h.wire.command("s1", "one", Kind::Do, "frobnicate", 1);
    h.send(&cmd).await;
    match h.wire.reply().await.outcome {
        Outcome::Failed { code, message } => {
            assert_eq!(code, "unknown_action");
            assert!(message.contains("frobnicate"), "{message}");
        }
        other => panic!("expected failed, got {other:?}"),
    }
    assert!(h.inbox_row(&cmd.command_id).await.is_some());
    h.stop().await;
}

async fn replicas_share_the_consumer_and_no_command_runs_twice(backend: Backend) {
    const COMMANDS: usize = 30;
    let mut h = Harness::new(backend).await;
    let per_replica = [counter(), counter()];
    for (replica, calls) in per_replica.iter().enumerate() {
        let participant = working_on(handler_with(Arc::clone(calls), move |ctx, calls| {
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                // Slow enough that one replica cannot take every command.
                tokio::time::sleep(Duration::from_millis(20)).await;
                write_effect(&ctx, "work").await?;
                Ok(json!({ "replica": replica }))
            })
        }));
        let mut config = h.config();
        config.db = h.connect_again().await;
        config.in_flight_max = 2;
        h.start(participant, config);
    }
    h.wait_for_pullers(2).await;

    for saga in 0..COMMANDS {
        h.send(&h.wire.command(&format!("s{saga}"), "one", Kind::Do, "work", 1)).await;
    }
    let mut first = std::collections::HashMap::new();
    for _ in 0..COMMANDS {
        let reply = h.wire.reply().await;
        assert!(matches!(reply.outcome, Outcome::Ok { .. }), "{reply:?}");
        assert!(first.insert(reply.command_id.clone(), reply.outcome).is_none());
    }
    let calls: Vec<usize> = per_replica.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert!(calls.iter().all(|&n| n > 0), "both replicas handled commands: {calls:?}");
    let total = calls.iter().sum::<usize>();
    // Two pools on one SQLite file can deadlock on SQLite's lock upgrade; SQLite
    // then fails one transaction at once (SQLITE_BUSY), its effect rolls back and
    // its command is redelivered, so a handler may run again. The effect still
    // happens once (checked below). PostgreSQL has no such conflict here.
    match backend {
        Backend::Postgres => assert_eq!(total, COMMANDS),
        Backend::Sqlite | Backend::SqliteGrouped => assert!(total >= COMMANDS),
    }

    // Every command again: answered from the inbox, whichever replica gets it.
    for saga in 0..COMMANDS {
        h.send(&h.wire.command(&format!("s{saga}"), "one", Kind::Do, "work", 2)).await;
    }
    for _ in 0..COMMANDS {
        let reply = h.wire.reply().await;
        assert_eq!(reply.attempt, 2);
        assert_eq!(Some(&reply.outcome), first.get(&reply.command_id));
    }
    assert_eq!(
        per_replica.iter().map(|c| c.load(Ordering::SeqCst)).sum::<usize>(),
        total,
        "duplicates ran no handler"
    );
    assert_eq!(h.all_effects().await, i64::try_from(COMMANDS).unwrap());
    for saga in 0..COMMANDS {
        let id = h.wire.command(&format!("s{saga}"), "one", Kind::Do, "work", 1).command_id;
        assert_eq!(h.effects(&id).await, 1, "{id}");
    }
    h.stop().await;
}

/// Another replica commits the inbox row for the same command while this
/// handler is writing its effect: this transaction's insert of the inbox row
/// fails, the effect rolls back with it, and the redelivered command is
/// answered with the other replica's stored reply. PostgreSQL only: on SQLite
/// the second writer would wait for this transaction's lock.
#[tokio::test]
async fn postgres_the_effect_rolls_back_when_its_inbox_row_cannot_be_written() {
    let mut h = Harness::new(Backend::Postgres).await;
    let calls = counter();
    let state = (Arc::clone(&calls), h.connect_again().await);
    let participant = working_on(handler_with(state, |ctx, (c, other_replica)| {
        Box::pin(async move {
            c.fetch_add(1, Ordering::SeqCst);
            write_effect(&ctx, "mine").await?;
            let stored = serde_json::to_string(&Reply {
                command_id: ctx.command().command_id.clone(),
                attempt: 1,
                outcome: Outcome::Ok { output: json!({ "by": "the other replica" }) },
            })
            .unwrap();
            use sea_orm::ConnectionTrait;
            other_replica
                .execute(sea_orm::Statement::from_sql_and_values(
                    sea_orm::DbBackend::Postgres,
                    "INSERT INTO skald_inbox VALUES ($1, 's1', 'one', 'do', $2, 0)",
                    [ctx.command().command_id.clone().into(), stored.into()],
                ))
                .await
                .unwrap();
            Ok(json!({ "by": "me" }))
        })
    }));
    h.start(participant, h.config());

    let cmd = h.wire.command("s1", "one", Kind::Do, "work", 1);
    h.send(&cmd).await;
    assert_eq!(
        h.wire.reply().await.outcome,
        Outcome::Ok { output: json!({ "by": "the other replica" }) }
    );
    assert_eq!(h.effects(&cmd.command_id).await, 0, "the losing effect rolled back");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the redelivery did not run the handler");
    h.stop().await;
}

/// `HandlerError::NoReply` sends nothing and leaves the command unacked.
#[tokio::test]
async fn no_reply_leaves_the_command_unanswered_and_unacked() {
    let mut h = Harness::new(Backend::Sqlite).await;
    let silent = counter();
    let participant = Participant::new(common::NAME)
        .action(
            "hang",
            handler_with(Arc::clone(&silent), |_ctx, s| {
                Box::pin(async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    Err(HandlerError::NoReply)
                })
            }),
        )
        .action("work", |_ctx: HandlerCtx<'_>| async { Ok(json!({})) });
    h.start(participant, h.config());

    let hang = h.wire.command("s1", "one", Kind::Do, "hang", 1);
    h.send(&hang).await;
    let work = h.wire.command("s2", "one", Kind::Do, "work", 1);
    h.send(&work).await;
    assert_eq!(h.wire.reply().await.command_id, work.command_id);
    while silent.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(h.wire.quiet_for(Duration::from_millis(300)).await, "no reply to the silent command");
    assert_eq!(h.wire.consumer_info().await.num_ack_pending, 1);
    assert!(h.inbox_row(&hang.command_id).await.is_none());
    h.stop().await;
}

/// Send a `work` command, wait until its handler has `started`, and stop the
/// participant: the command.
async fn stop_while_working(h: &mut Harness, started: &tokio::sync::Notify) -> Command {
    let cmd = h.wire.command("s1", "one", Kind::Do, "work", 1);
    h.send(&cmd).await;
    started.notified().await;
    h.stop().await;
    cmd
}

/// On shutdown the participant stops pulling but finishes (and answers) the
/// command in flight before `run` returns.
#[tokio::test]
async fn shutdown_finishes_the_command_in_flight() {
    let mut h = Harness::new(Backend::Sqlite).await;
    let started = Arc::new(tokio::sync::Notify::new());
    let participant = working_on(handler_with(Arc::clone(&started), |ctx, s| {
        Box::pin(async move {
            s.notify_one();
            tokio::time::sleep(Duration::from_millis(300)).await;
            write_effect(&ctx, "slow").await?;
            Ok(json!({ "slow": true }))
        })
    }));
    h.start(participant, h.config());
    let cmd = stop_while_working(&mut h, &started).await;

    assert_eq!(h.wire.reply().await.outcome, Outcome::Ok { output: json!({ "slow": true }) });
    assert_eq!(h.effects(&cmd.command_id).await, 1);
    assert_eq!(h.wire.consumer_info().await.num_ack_pending, 0);
}

/// A handler that outlives the shutdown grace is abandoned: rolled back, not
/// answered, and handed back to JetStream at once for another replica.
#[tokio::test]
async fn shutdown_abandons_a_handler_that_outlives_the_grace() {
    let mut h = Harness::new(Backend::Sqlite).await;
    let started = Arc::new(tokio::sync::Notify::new());
    let participant = working_on(handler_with(Arc::clone(&started), |ctx, s| {
        Box::pin(async move {
            write_effect(&ctx, "never committed").await?;
            s.notify_one();
            std::future::pending::<()>().await;
            Ok(json!({}))
        })
    }));
    let mut config = h.config();
    config.shutdown_grace = Duration::from_millis(200);
    h.start(participant, config);
    let cmd = stop_while_working(&mut h, &started).await;

    assert!(h.wire.quiet_for(Duration::from_millis(300)).await);
    assert_eq!(h.effects(&cmd.command_id).await, 0);

    // Another replica gets it at once: had it not been nak'ed, JetStream would
    // hold it for the 30 s ack wait.
    let calls = counter();
    h.start(counting_participant(&calls), h.config());
    let reply = tokio::time::timeout(Duration::from_secs(10), h.wire.reply())
        .await
        .expect("redelivered well before the ack wait");
    assert!(matches!(reply.outcome, Outcome::Ok { .. }));
    assert_eq!(h.effects(&cmd.command_id).await, 1);
    assert_eq!(h.wire.consumer_info().await.num_redelivered, 0, "redelivery acked");
    h.stop().await;
}

/// An output too large to publish is refused (and its effect rolled back)
/// instead of being stored and failing to publish on every redelivery.
#[tokio::test]
async fn an_output_too_large_to_publish_is_refused() {
    let mut h = Harness::new(Backend::Sqlite).await;
    let participant = working_on(handler(|ctx| {
        Box::pin(async move {
            write_effect(&ctx, "work").await?;
            Ok(json!({ "blob": "x".repeat(sagas::protocol::BODY_BYTES_MAX) }))
        })
    }));
    h.start(participant, h.config());
    let cmd = h.wire.command("s1", "one", Kind::Do, "work", 1);
    h.send(&cmd).await;
    match h.wire.reply().await.outcome {
        Outcome::Failed { code, .. } => assert_eq!(code, "output_too_large"),
        other => panic!("expected failed, got {other:?}"),
    }
    assert_eq!(h.effects(&cmd.command_id).await, 0);
    assert!(h.inbox_row(&cmd.command_id).await.is_some());
    h.stop().await;
}

/// `HandlerCtx::commit_now` commits apart from the command's transaction:
/// its write stays when the handler then refuses (and so rolls back what it
/// wrote in `tx()`), and it is refused once the handler holds `tx()`.
async fn commit_now_stays_whatever_the_answer(backend: Backend) {
    let mut h = Harness::new(backend).await;
    let db = sea_orm::ConnectionTrait::get_database_backend(&h.db);
    let participant = working_on(handler_with(db, |ctx, db| {
        Box::pin(async move {
            let id = &ctx.command().command_id;
            ctx.commit_now(effect(db, id, "intent")).await?;
            write_effect(&ctx, "work").await?;
            if ctx.command().saga_id == "late" {
                ctx.commit_now(effect(db, id, "too late")).await?;
            }
            Err(HandlerError::failed("declined", "the provider declined"))
        })
    }));
    h.start(participant, h.config());

    let refused = h.wire.command("s1", "one", Kind::Do, "work", 1);
    h.send(&refused).await;
    assert!(matches!(h.wire.reply().await.outcome, Outcome::Failed { .. }));
    assert_eq!(h.effects(&refused.command_id).await, 1, "the intent stays, the work rolled back");
    assert_eq!(h.all_effects().await, 1);

    let late = h.wire.command("late", "one", Kind::Do, "work", 1);
    h.send(&late).await;
    match h.wire.reply().await.outcome {
        Outcome::Retry { code, message, .. } => {
            assert_eq!(code, "database_error");
            assert!(message.contains("commit_now after tx()"), "{message}");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    assert_eq!(h.effects(&late.command_id).await, 1, "only the intent, committed before tx()");
    h.stop().await;
}

/// Group commit: many commands at once share commits; a command whose handler
/// refuses rolls back only its own writes; each effect is committed with its
/// inbox row before its reply, and none twice.
#[tokio::test]
async fn group_commit_keeps_each_command_to_its_own_outcome() {
    const COMMANDS: usize = 60;
    let mut h = Harness::new(Backend::SqliteGrouped).await;
    let calls = counter();
    let participant = working_participant(&calls, "work", |_, command| {
        if command.saga_id.ends_with('7') {
            return Err(HandlerError::failed("refused", "sevens are refused"));
        }
        Ok(json!({ "done": command.command_id }))
    });
    h.start(participant, Config { in_flight_max: 32, ..h.config() });
    let commands: Vec<_> = (0..COMMANDS)
        .map(|i| h.wire.command(&format!("s{i}"), "one", Kind::Do, "work", 1))
        .collect();
    for cmd in &commands {
        h.send(cmd).await;
    }
    let mut replies = std::collections::HashMap::new();
    for _ in 0..COMMANDS {
        let reply = h.wire.reply().await;
        // Each reply follows its command's commit: its inbox row is there.
        assert!(h.inbox_row(&reply.command_id).await.is_some(), "{reply:?}");
        assert!(replies.insert(reply.command_id.clone(), reply.outcome).is_none());
    }
    for cmd in &commands {
        let refused = cmd.saga_id.ends_with('7');
        let outcome = &replies[&cmd.command_id];
        assert_eq!(matches!(outcome, Outcome::Failed { .. }), refused, "{outcome:?}");
        assert_eq!(h.effects(&cmd.command_id).await, i64::from(!refused), "{}", cmd.command_id);
    }
    assert_eq!(calls.load(Ordering::SeqCst), COMMANDS, "no handler ran twice");
    h.stop().await;
}

/// Ask the participant under test what it recorded (as the orchestrator's audit does).
async fn inspect(h: &Harness, body: Vec<u8>) -> InspectResponse {
    let subject = h.wire.ns.inspect_subject(common::NAME);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // The participant subscribes as it starts: until then nobody answers.
        match h.wire.nats.request(subject.clone(), body.clone().into()).await {
            Ok(msg) => return serde_json::from_slice(&msg.payload).unwrap(),
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no answer to the inspection: {e}"),
        }
    }
}

async fn an_inspection_tells_the_inbox_and_the_inspectors_effects(backend: Backend) {
    let mut h = Harness::new(backend).await;
    fn effects(ctx: InspectCtx<'_>) -> BoxFuture<'_, Result<Effects, String>> {
        Box::pin(async move {
            let mut found = Effects::default();
            for asked in ctx.asked {
                let state =
                    if asked.recorded.is_some() { EffectState::InForce } else { EffectState::None };
                let effect = Effect {
                    state,
                    what: "row".into(),
                    id: None,
                    detail: json!({"saga": ctx.saga_id}),
                };
                found.of.insert(asked.command.command_id.clone(), effect);
            }
            found.others.push(Effect {
                state: EffectState::Undone,
                what: "extra".into(),
                id: Some("x-1".into()),
                detail: json!(null),
            });
            Ok(found)
        })
    }
    let participant = working_participant(&counter(), "work", |_, _| Ok(json!({})))
        .compensation("unwork", counted(&counter(), "unwork", |_, _| Ok(json!({}))))
        .inspector(skald_participant::inspector(effects));
    h.start(participant, h.config());

    // s1: `one` done; s1 `two` undone before its do (a tombstone); s2: nothing.
    let done = h.wire.command("s1", "one", Kind::Do, "work", 1);
    h.send(&done).await;
    assert!(matches!(h.wire.reply().await.outcome, Outcome::Ok { .. }));
    let undo = h.wire.command("s1", "two", Kind::Undo, "unwork", 1);
    h.send(&undo).await;
    h.wire.reply().await;

    let asked = |id: &str, step: &str, kind: Kind, action: &str| InspectedCommand {
        command_id: id.to_owned(),
        step: step.into(),
        kind,
        action: action.into(),
        payload: json!({}),
    };
    let request = InspectRequest {
        sagas: vec![
            InspectSaga {
                saga_id: "s1".into(),
                commands: vec![
                    asked(&done.command_id, "one", Kind::Do, "work"),
                    asked(&undo.command_id, "two", Kind::Undo, "unwork"),
                ],
            },
            InspectSaga {
                saga_id: "s2".into(),
                commands: vec![asked("s2.one.do", "one", Kind::Do, "work")],
            },
        ],
    };
    let InspectResponse::Inspected { participant, sagas } =
        inspect(&h, serde_json::to_vec(&request).unwrap()).await
    else {
        panic!("the inspection was refused");
    };
    assert_eq!(participant, common::NAME);
    assert_eq!(sagas.len(), 2);
    let s1 = &sagas[0];
    assert_eq!(
        s1.commands[0].recorded.as_ref().unwrap().outcome,
        Outcome::Ok { output: json!({}) }
    );
    assert_eq!(s1.commands[0].effect.as_ref().unwrap().state, EffectState::InForce);
    let undone = s1.commands[1].recorded.as_ref().unwrap();
    assert!(undone.tombstone, "{undone:?}");
    // The tombstone's `do` row was not asked about: it is listed apart, marked.
    assert_eq!(s1.unasked.len(), 1, "{:?}", s1.unasked);
    assert_eq!(s1.unasked[0].command_id, "s1.two.do");
    assert!(s1.unasked[0].tombstone);
    assert_eq!(s1.others[0].id.as_deref(), Some("x-1"));
    let s2 = &sagas[1];
    assert!(s2.commands[0].recorded.is_none());
    assert_eq!(s2.commands[0].effect.as_ref().unwrap().state, EffectState::None);

    // What cannot be read, or is too large, is refused with a code.
    match inspect(&h, b"{not json".to_vec()).await {
        InspectResponse::Refused { code, .. } => assert_eq!(code, "invalid_request"),
        other => panic!("{other:?}"),
    }
    let many = InspectRequest {
        sagas: (0..=sagas::protocol::INSPECT_SAGAS_MAX)
            .map(|i| InspectSaga { saga_id: format!("s{i}"), commands: vec![] })
            .collect(),
    };
    match inspect(&h, serde_json::to_vec(&many).unwrap()).await {
        InspectResponse::Refused { code, .. } => assert_eq!(code, "too_large"),
        other => panic!("{other:?}"),
    }
    h.stop().await;
}
