//! [`RequireToken`]: a tower layer that lets a request through only with a
//! valid token, for tonic and for hyper/axum services alike.
//!
//! Like tower-http's `AsyncRequireAuthorizationLayer`: it reads the
//! `authorization` header (`Bearer <token>` or `access_token <token>`),
//! verifies it with the layer's required scopes through a
//! [`CachedVerifier`], and either puts the answer (`Arc<VerifyResponse>`)
//! into the request's extensions for the handler, or answers itself —
//! UNAUTHENTICATED / PERMISSION_DENIED to a gRPC request, 401 / 403 to
//! plain HTTP. When tokend cannot answer, the request is refused (fail
//! closed): gRPC gets tokend's status, HTTP gets 503.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response, StatusCode, header};
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    CachedVerifier,
    pb::{VerifyResponse, VerifyResult},
};

/// Requires a valid token granting `required_scopes` on every request.
#[derive(Clone)]
pub struct RequireToken {
    verifier: CachedVerifier,
    scopes: Arc<[String]>,
}

impl RequireToken {
    /// A layer verifying through `verifier`, requiring every scope in
    /// `required_scopes` (none: any valid token).
    pub fn new(verifier: CachedVerifier, required_scopes: impl IntoIterator<Item = impl Into<String>>) -> RequireToken {
        RequireToken { verifier, scopes: required_scopes.into_iter().map(Into::into).collect() }
    }
}

impl<S> Layer<S> for RequireToken {
    type Service = RequireTokenService<S>;

    fn layer(&self, inner: S) -> RequireTokenService<S> {
        RequireTokenService { inner, verifier: self.verifier.clone(), scopes: self.scopes.clone() }
    }
}

/// The service [`RequireToken`] wraps around another.
#[derive(Clone)]
pub struct RequireTokenService<S> {
    inner: S,
    verifier: CachedVerifier,
    scopes: Arc<[String]>,
}

impl<S, B, ResBody> Service<Request<B>> for RequireTokenService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request (tower's rule).
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let (verifier, scopes) = (self.verifier.clone(), self.scopes.clone());
        Box::pin(async move {
            let grpc = is_grpc(&request);
            let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            let refusal = match presented {
                None => Refusal::Unauthenticated("missing authorization header".into()),
                Some(presented) => match verifier.check_any(presented, &scopes).await {
                    Ok(answer) if answer.valid => {
                        request.extensions_mut().insert(answer);
                        return inner.call(request).await;
                    }
                    Ok(answer) => Refusal::from_answer(&answer),
                    Err(status) => Refusal::Unavailable(status),
                },
            };
            Ok(if grpc { refusal.into_grpc() } else { refusal.into_http() })
        })
    }
}

/// Whether a request is gRPC (`content-type: application/grpc…`).
fn is_grpc<B>(request: &Request<B>) -> bool {
    request.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Why a request is not let through.
enum Refusal {
    /// No usable token.
    Unauthenticated(String),
    /// A valid token without a required scope.
    Forbidden,
    /// tokend could not answer.
    Unavailable(Status),
}

impl Refusal {
    fn from_answer(answer: &VerifyResponse) -> Refusal {
        match answer.result() {
            VerifyResult::InsufficientScope => Refusal::Forbidden,
            result => Refusal::Unauthenticated(format!("token rejected: {}", result.as_str_name())),
        }
    }

    fn into_grpc<B: Default>(self) -> Response<B> {
        let status = match self {
            Refusal::Unauthenticated(why) => Status::unauthenticated(why),
            Refusal::Forbidden => Status::permission_denied("token lacks a required scope"),
            // A bad scope in the layer's own configuration is our fault,
            // not the caller's.
            Refusal::Unavailable(s) if s.code() == Code::InvalidArgument => Status::internal(s.message().to_owned()),
            Refusal::Unavailable(s) => s,
        };
        status.into_http()
    }

    fn into_http<B: Default>(self) -> Response<B> {
        let (code, challenge) = match self {
            Refusal::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, Some("Bearer")),
            Refusal::Forbidden => (StatusCode::FORBIDDEN, Some("Bearer error=\"insufficient_scope\"")),
            Refusal::Unavailable(s) if s.code() == Code::InvalidArgument => (StatusCode::INTERNAL_SERVER_ERROR, None),
            Refusal::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
        };
        let mut response = Response::new(B::default());
        *response.status_mut() = code;
        if let Some(challenge) = challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}
