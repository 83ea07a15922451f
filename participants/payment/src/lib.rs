//! The Skald payment participant, and `psp-sim`, a payment provider to run it
//! against.
//!
//! The participant (`payment serve`) answers the saga steps of participant
//! `payment`: actions `charge` (compensation `refund`) and `payout`. Each
//! effect is a call to the provider's HTTP API with the command id as
//! `Idempotency-Key`, so a step is at most one charge, refund or payout:
//! - the SDK's inbox answers a repeated command without calling the provider;
//! - the intent is recorded (and committed) before the call, and a re-run
//!   after a crash or a `retry` makes the same call with the same key, which
//!   the provider answers from its own idempotency store;
//! - a charge given up while its outcome was unknown is refunded by the
//!   reconciler, because the SDK answers its `refund` with a tombstone.
//!
//! | module | owns |
//! |---|---|
//! | [`api`] | the provider's request and response bodies |
//! | [`provider`] | the HTTP client: keys, timeouts, bounded reads |
//! | [`outcome`] | what a provider answer means for the saga (`ok`/`failed`/`retry`) |
//! | [`store`] | the `payments` table: intents and results |
//! | [`handlers`] | the `charge`, `refund` and `payout` handlers |
//! | [`reconcile`] | refunds of charges whose step was given up |
//! | [`webhooks`] | the provider's webhooks, handed to the sagas waiting for them |
//! | [`inspect`] | what an audit is told: each call and the provider's view of it |
//! | [`serve`] | `run(config, shutdown)`: migrations, participant, reconciler |
//! | [`sim`] | `psp-sim`: the provider simulator as an axum `Router` |
//! | [`cli`] | the `payment` and `psp-sim` command lines |

pub mod api;
pub mod cli;
pub mod handlers;
pub mod inspect;
pub mod outcome;
pub mod provider;
pub mod reconcile;
pub mod serve;
pub mod sim;
pub mod store;
pub mod webhooks;
