//! Hostile input beyond field validation: oversize requests, and racing
//! admin calls on the same token.

mod common;

use common::*;
use tokend::pb::{self, TokenStatus, VerifyResult};
use tonic::Code;

#[tokio::test]
async fn a_5_mib_request_is_refused_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let before = admin.list(pb::ListRequest::default()).await.unwrap().into_inner().tokens.len();
    let mut req = issue_request("big", "o", &[]);
    req.labels.insert("k".into(), "v".repeat(5 << 20));
    let err = admin.issue(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("65536") && err.message().contains("--max-request-bytes"), "{}", err.message());
    let mut v = server.verifier().await;
    let big = pb::VerifyRequest { token: "t".repeat(5 << 20), required_scopes: vec![], ..Default::default() };
    assert_eq!(v.verify(big).await.unwrap_err().code(), Code::InvalidArgument);
    // Still serving, nothing written.
    let issued = issue(&mut admin, "small", "o", &[]).await;
    assert!(verify(&mut v, &issued.secret, &[]).await.valid);
    let after = admin.list(pb::ListRequest::default()).await.unwrap().into_inner().tokens.len();
    assert_eq!(after, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revoke_and_rotate_of_one_token_leave_one_consistent_state() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    for round in 0..20 {
        let mut a = admin.clone();
        let issued = issue(&mut a, &format!("race{round}"), "o", &[]).await;
        let id = issued.token.unwrap().id;
        let (mut r1, mut r2) = (admin.clone(), admin.clone());
        let (id1, id2) = (id.clone(), id.clone());
        let revoke = tokio::spawn(async move { r1.revoke(pb::RevokeRequest { id: id1, reason: "race".into() }).await });
        let rotate =
            tokio::spawn(async move { r2.rotate(pb::RotateRequest { id: id2, grace_period: Some(secs(3600)) }).await });
        let revoked = revoke.await.unwrap().expect("revoke always succeeds");
        let rotated = rotate.await.unwrap();
        let now = a.get(pb::GetRequest { id: id.clone() }).await.unwrap().into_inner().token.unwrap();
        assert_eq!(status(&now), TokenStatus::Revoked, "the revoke stands either way");
        assert_eq!(now.revoke_time, revoked.into_inner().token.unwrap().revoke_time);
        let mut v = server.verifier().await;
        assert_eq!(result(&verify(&mut v, &issued.secret, &[]).await), VerifyResult::Revoked);
        match rotated {
            // Rotation first: both halves recorded, successor alive.
            Ok(r) => {
                let r = r.into_inner();
                let successor = r.token.unwrap();
                assert_eq!(now.rotated_to, successor.id);
                assert_eq!(successor.rotated_from, id);
                assert_eq!(result(&verify(&mut v, &r.secret, &[]).await), VerifyResult::Ok);
            }
            // Revoke first: the rotation was refused and left no trace.
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition);
                assert!(now.rotated_to.is_empty());
            }
        }
    }
}
