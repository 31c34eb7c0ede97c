//! The verification service's gRPC edge.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zhengzhao_auth::principal;
use zhengzhao_proto::convert::{logged_event_hash_only, status_to_wire, timestamp};
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::verification::v1 as pb;
use zhengzhao_proto::verification::v1::verification_service_server::{VerificationService, VerificationServiceServer};

use crate::{Outcome, Verdict, Verification};

/// The tonic service over [`Verification`].
#[derive(Debug, Clone)]
pub struct VerificationGrpc(pub Arc<Verification>);

impl VerificationGrpc {
    pub fn into_server(self) -> VerificationServiceServer<Self> {
        VerificationServiceServer::new(self)
    }
}

fn outcome_to_wire(o: Outcome) -> pb::VerificationOutcome {
    use pb::VerificationOutcome as W;
    match o {
        Outcome::Valid => W::Valid,
        Outcome::NotYetValid => W::NotYetValid,
        Outcome::Expired => W::Expired,
        Outcome::Seized => W::Seized,
        Outcome::Cancelled => W::Cancelled,
        Outcome::Withdrawn => W::Withdrawn,
        Outcome::Revoked => W::Revoked,
        Outcome::NotInForce => W::NotInForce,
        Outcome::SignatureInvalid => W::SignatureInvalid,
        Outcome::KeyUnknown => W::KeyUnknown,
        Outcome::NotFound => W::NotFound,
        Outcome::Malformed => W::Malformed,
        Outcome::Mismatch => W::Mismatch,
        Outcome::Superseded => W::Superseded,
        Outcome::ReportedLost => W::ReportedLost,
        Outcome::KeyCompromised => W::KeyCompromised,
        Outcome::LogMismatch => W::LogMismatch,
        Outcome::CertificateInvalid => W::CertificateInvalid,
    }
}

fn problem_to_wire(p: &zhengzhao_crypto::x509::CertProblem) -> pb::CertificateProblem {
    use pb::CertificateProblem as W;
    use zhengzhao_crypto::x509::CertProblem as P;
    match p {
        P::Missing(_) => W::Missing,
        P::Malformed(_) => W::Malformed,
        P::KeyMismatch(_) => W::KeyMismatch,
        P::Untrusted(_) => W::Untrusted,
        P::Expired(_) => W::Expired,
        P::NotYetValid(_) => W::NotYetValid,
        P::Revoked(_) => W::Revoked,
    }
}

pub fn verdict_to_wire(v: &Verdict) -> pb::Verification {
    pb::Verification {
        outcome: outcome_to_wire(v.outcome) as i32,
        identifier: v.identifier.clone(),
        status: v.status.map(status_to_wire).unwrap_or_default() as i32,
        key_id: v.key_id.clone(),
        detail: v.detail.clone(),
        checked_at: Some(timestamp(v.checked_at)),
        log_inclusion: v.log.as_ref().map(|l| pb::LogInclusion {
            checkpoint: Some((&l.checkpoint).into()),
            events: l
                .events
                .iter()
                .map(if l.leaves_visible { issuance::LoggedEvent::from } else { logged_event_hash_only })
                .collect(),
            library_jwk_json: l.library_jwk.to_string(),
        }),
        certificate_problem: v.certificate.as_ref().map(problem_to_wire).unwrap_or_default() as i32,
    }
}

#[tonic::async_trait]
impl VerificationService for VerificationGrpc {
    async fn verify_licence(
        &self,
        req: Request<pb::VerifyLicenceRequest>,
    ) -> Result<Response<pb::VerifyLicenceResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let v = self.0.verify_identifier(&who, &r.identifier, r.include_inclusion_proof).await?;
        v.outcome.count();
        Ok(Response::new(pb::VerifyLicenceResponse { verification: Some(verdict_to_wire(&v)) }))
    }

    async fn verify_document(
        &self,
        req: Request<pb::VerifyDocumentRequest>,
    ) -> Result<Response<pb::VerifyDocumentResponse>, Status> {
        let who = principal(&req)?;
        let v = self.0.verify_document(&who, &req.into_inner().jws).await?;
        v.outcome.count();
        Ok(Response::new(pb::VerifyDocumentResponse { verification: Some(verdict_to_wire(&v)) }))
    }
}
