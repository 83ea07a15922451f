//! One saga across services: the orchestrator's record of each step beside
//! what each participant recorded for it, and where the two disagree.
//!
//! [`compare`] holds the rules (pure); [`Auditor`] reads histories through the
//! driver and asks the participants over NATS (core request/reply on
//! `<prefix>.inspect.<participant>`, see `sagas::protocol::InspectRequest`),
//! batching the sagas of one audit into as few requests per participant as
//! the request limits allow, a few in flight at once, each bounded in time.
//! An audit changes nothing anywhere.

pub mod compare;

use crate::engine::driver::{DriveError, Driver};
use compare::{Plan, SagaAudit, Unchecked};
use futures::StreamExt;
use sagas::protocol::{
    INSPECT_COMMANDS_MAX, INSPECT_SAGAS_MAX, InspectRequest, InspectResponse, InspectSaga,
    Namespace, SagaRecords,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a participant has to answer one inspection.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// Inspections in flight at once.
const ASKING_MAX: usize = 4;
/// Most payload bytes put in one request (the bus carries at most 1 MiB).
const REQUEST_BYTES_MAX: usize = 256 * 1024;

/// One request's answer: the participant, the sagas asked about, and their
/// records or why there are none.
type Answered = (String, Vec<String>, Result<Vec<SagaRecords>, String>);

/// Why a question got no answer.
#[derive(Debug)]
enum Asked {
    /// Too many sagas for one answer (too large, or too slow): ask fewer.
    TooMuch(String),
    Failed(String),
}

/// Asks participants what they recorded.
#[derive(Debug, Clone)]
pub struct Auditor {
    nats: async_nats::Client,
    ns: Namespace,
    timeout: Duration,
}

impl Auditor {
    #[must_use]
    pub fn new(nats: async_nats::Client, ns: Namespace) -> Self {
        Self { nats, ns, timeout: ASK_TIMEOUT }
    }

    /// Audit these sagas. A saga that is not stored (any more) is left out;
    /// one whose definition this instance does not know is answered unchecked.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn audit(
        &self,
        driver: &Driver,
        saga_ids: &[String],
    ) -> Result<Vec<SagaAudit>, DriveError> {
        let mut plans = Vec::with_capacity(saga_ids.len());
        let mut unplanned = Vec::new();
        for id in saga_ids {
            match plan(driver, id).await {
                Ok(p) => plans.push(p),
                Err(DriveError::UnknownSaga { .. }) => {}
                Err(e @ DriveError::UnknownDefinition { .. }) => {
                    unplanned.push(SagaAudit {
                        saga_id: id.clone(),
                        saga_type: String::new(),
                        status: String::new(),
                        steps: Vec::new(),
                        unexplained: Vec::new(),
                        unchecked: vec![Unchecked {
                            participant: "orchestrator".into(),
                            reason: e.to_string(),
                        }],
                        disagreements: Vec::new(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let mut audits = self.judge(&plans).await;
        audits.extend(unplanned);
        Ok(audits)
    }

    /// Ask every participant the plans name, then judge each saga.
    pub async fn judge(&self, plans: &[Plan]) -> Vec<SagaAudit> {
        // participant → the sagas to ask it about
        let mut asks: BTreeMap<String, Vec<InspectSaga>> = BTreeMap::new();
        for plan in plans {
            for (participant, saga) in plan.asks() {
                asks.entry(participant).or_default().push(saga);
            }
        }
        let requests: Vec<(String, InspectRequest)> = asks
            .into_iter()
            .flat_map(|(participant, sagas)| {
                batches(sagas).into_iter().map(move |r| (participant.clone(), r))
            })
            .collect();
        let answers: Vec<Answered> = futures::stream::iter(requests)
            .map(|(participant, request)| async move {
                let answers = self.ask_splitting(&participant, request).await;
                answers.into_iter().map(move |(ids, answer)| (participant.clone(), ids, answer))
            })
            .buffer_unordered(ASKING_MAX)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        // saga → participant → its records, or why there are none
        let mut by_saga: BTreeMap<String, BTreeMap<String, Result<SagaRecords, String>>> =
            BTreeMap::new();
        for (participant, ids, answer) in answers {
            match answer {
                Ok(records) => {
                    let mut records: BTreeMap<String, SagaRecords> =
                        records.into_iter().map(|r| (r.saga_id.clone(), r)).collect();
                    for id in ids {
                        let got = records
                            .remove(&id)
                            .ok_or_else(|| "the answer left this saga out".to_owned());
                        by_saga.entry(id).or_default().insert(participant.clone(), got);
                    }
                }
                Err(why) => {
                    for id in ids {
                        by_saga
                            .entry(id)
                            .or_default()
                            .insert(participant.clone(), Err(why.clone()));
                    }
                }
            }
        }
        plans
            .iter()
            .map(|plan| plan.judge(&by_saga.remove(&plan.saga_id).unwrap_or_default()))
            .collect()
    }

    /// Ask `participant`; a request it finds too large or too slow to
    /// answer is asked again in halves (down to one saga).
    async fn ask_splitting(
        &self,
        participant: &str,
        request: InspectRequest,
    ) -> Vec<(Vec<String>, Result<Vec<SagaRecords>, String>)> {
        let mut todo = vec![request];
        let mut out = Vec::new();
        while let Some(mut request) = todo.pop() {
            let ids: Vec<String> = request.sagas.iter().map(|s| s.saga_id.clone()).collect();
            match self.ask(participant, &request).await {
                Err(Asked::TooMuch(_)) if request.sagas.len() > 1 => {
                    let half = request.sagas.split_off(request.sagas.len() / 2);
                    todo.push(InspectRequest { sagas: half });
                    todo.push(request);
                }
                Err(Asked::TooMuch(why) | Asked::Failed(why)) => out.push((ids, Err(why))),
                Ok(records) => out.push((ids, Ok(records))),
            }
        }
        out
    }

    /// One inspection request to `participant`.
    async fn ask(
        &self,
        participant: &str,
        request: &InspectRequest,
    ) -> Result<Vec<SagaRecords>, Asked> {
        let body = serde_json::to_vec(request)
            .map_err(|e| Asked::Failed(format!("cannot encode the request: {e}")))?;
        let subject = self.ns.inspect_subject(participant);
        let asked =
            tokio::time::timeout(self.timeout, self.nats.request(subject, body.into())).await;
        let msg = match asked {
            Err(_) => {
                let secs = self.timeout.as_secs();
                return Err(Asked::TooMuch(format!(
                    "`{participant}` did not answer within {secs}s"
                )));
            }
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(Asked::Failed(format!(
                    "no replica of `{participant}` answers inspections (is it running, and a \
                     version that answers them?)"
                )));
            }
            Ok(Err(e)) => return Err(Asked::Failed(format!("asking `{participant}` failed: {e}"))),
            Ok(Ok(msg)) => msg,
        };
        match serde_json::from_slice::<InspectResponse>(&msg.payload) {
            Ok(InspectResponse::Inspected { sagas, .. }) => Ok(sagas),
            Ok(InspectResponse::Refused { code, message }) => {
                let why = format!("`{participant}` refused the inspection ({code}): {message}");
                if matches!(code.as_str(), "too_large" | "answer_too_large" | "timed_out") {
                    Err(Asked::TooMuch(why))
                } else {
                    Err(Asked::Failed(why))
                }
            }
            Err(e) => Err(Asked::Failed(format!("`{participant}`'s answer cannot be read: {e}"))),
        }
    }
}

/// How the sagas of an audit came out.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Tally {
    /// Sagas audited.
    pub checked: u64,
    /// Of them, sagas where every step agrees.
    pub agreeing: u64,
    /// Of them, sagas with at least one disagreement.
    pub disagreeing: u64,
    /// Of them, sagas a participant did not (fully) answer for.
    pub unchecked: u64,
    /// Disagreements by kind (every kind listed, zeros included).
    pub by_kind: BTreeMap<String, u64>,
    /// The sagas that disagree or could not be checked, whole.
    pub sagas: Vec<SagaAudit>,
}

impl Tally {
    /// Count these audits in.
    pub fn add(&mut self, audits: Vec<SagaAudit>) {
        for kind in compare::DisagreementKind::ALL {
            self.by_kind.entry(kind.as_str().to_owned()).or_default();
        }
        for audit in audits {
            self.checked += 1;
            let unchecked = !audit.unchecked.is_empty()
                || audit.steps.iter().any(|s| s.verdict == compare::Verdict::Unchecked);
            if unchecked {
                self.unchecked += 1;
            }
            if audit.disagreements.is_empty() && !unchecked {
                self.agreeing += 1;
                continue;
            }
            if !audit.disagreements.is_empty() {
                self.disagreeing += 1;
                for d in &audit.disagreements {
                    *self.by_kind.entry(d.kind.as_str().to_owned()).or_default() += 1;
                }
            }
            self.sagas.push(audit);
        }
    }

    /// Every saga agreed.
    #[must_use]
    pub fn clean(&self) -> bool {
        self.disagreeing == 0 && self.unchecked == 0
    }
}

/// The plan of one stored saga: its history read under the definition it runs.
///
/// # Errors
/// [`DriveError::UnknownSaga`] when it is not stored; store errors.
pub async fn plan(driver: &Driver, saga_id: &str) -> Result<Plan, DriveError> {
    let (loaded, definition) = driver.loaded(saga_id).await?;
    Ok(Plan::new(saga_id, &loaded.row.status, &definition, &loaded.events))
}

/// The sagas to ask one participant about, cut into requests within the limits.
fn batches(sagas: Vec<InspectSaga>) -> Vec<InspectRequest> {
    let mut out = Vec::new();
    let mut current = InspectRequest { sagas: Vec::new() };
    let (mut commands, mut bytes) = (0_usize, 0_usize);
    for saga in sagas {
        let n = saga.commands.len();
        let size: usize = saga.commands.iter().map(|c| c.payload.to_string().len() + 256).sum();
        let full = current.sagas.len() >= INSPECT_SAGAS_MAX
            || commands + n > INSPECT_COMMANDS_MAX
            || bytes + size > REQUEST_BYTES_MAX;
        if full && !current.sagas.is_empty() {
            out.push(std::mem::replace(&mut current, InspectRequest { sagas: Vec::new() }));
            (commands, bytes) = (0, 0);
        }
        commands += n;
        bytes += size;
        current.sagas.push(saga);
    }
    if !current.sagas.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagas::protocol::{InspectedCommand, Kind};

    fn saga(i: usize, commands: usize, payload_bytes: usize) -> InspectSaga {
        InspectSaga {
            saga_id: format!("s{i}"),
            commands: (0..commands)
                .map(|c| InspectedCommand {
                    command_id: format!("s{i}.c{c}.do"),
                    step: format!("c{c}"),
                    kind: Kind::Do,
                    action: "a".into(),
                    payload: serde_json::Value::String("x".repeat(payload_bytes)),
                })
                .collect(),
        }
    }

    #[test]
    fn requests_keep_within_every_limit() {
        let many: Vec<InspectSaga> = (0..150).map(|i| saga(i, 2, 10)).collect();
        let cut = batches(many);
        assert_eq!(cut.iter().map(|r| r.sagas.len()).sum::<usize>(), 150);
        assert!(cut.iter().all(|r| r.too_large().is_none()), "a batch over the limits");
        let large: Vec<InspectSaga> = (0..10).map(|i| saga(i, 1, 100_000)).collect();
        let cut = batches(large);
        assert!(cut.len() >= 4, "{} batches of 100 KB payloads", cut.len());
        // One saga alone larger than the byte budget still goes, on its own.
        assert_eq!(batches(vec![saga(0, 1, 400_000)]).len(), 1);
    }
}
