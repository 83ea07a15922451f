//! The benchmark commands: `skald bench` (the `bench` saga end to end, [`e2e`]),
//! `bench-floor` (the infrastructure alone), `bench-scale` (store size),
//! `bench-recovery` (after `kill -9`) and `bench-topup` (the `topup` saga over
//! ledger, payment and psp-sim), with what they share in [`support`].

pub mod e2e;
pub mod floor;
pub mod recovery;
pub mod scale;
pub mod support;
pub mod topup;
