//! A small tonic service protected by `RequireToken`.
//!
//! Start tokend (`cargo run --release -- serve`), issue a token with the
//! scope `greet`, then:
//!
//! ```text
//! cargo run -p tokend-client --example protected            # serves on 127.0.0.1:50061
//! grpcurl -plaintext -import-path client/examples -proto greeter.proto \
//!   -H "authorization: Bearer $TOKEN" 127.0.0.1:50061 greeter.v1.GreeterService/Greet
//! ```
//!
//! `TOKEND_ENDPOINT` (default `http://127.0.0.1:50051`) and `GREETER_LISTEN`
//! (default `127.0.0.1:50061`) change the addresses.

use std::sync::Arc;

use tokend_client::{CachedVerifier, RequireToken, VerifyResponse};
use tonic::{Request, Response, Status, transport::Server};

mod pb {
    tonic::include_proto!("greeter.v1");
}

use pb::{
    GreetRequest, GreetResponse,
    greeter_service_server::{GreeterService, GreeterServiceServer},
};

struct Greeter;

#[tonic::async_trait]
impl GreeterService for Greeter {
    async fn greet(&self, request: Request<GreetRequest>) -> Result<Response<GreetResponse>, Status> {
        // The layer let the call through, so tokend's answer is here.
        let token = request
            .extensions()
            .get::<Arc<VerifyResponse>>()
            .ok_or_else(|| Status::internal("RequireToken is not in front of this service"))?;
        Ok(Response::new(GreetResponse { message: format!("hello, {}", token.owner) }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("TOKEND_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let listen = std::env::var("GREETER_LISTEN").unwrap_or_else(|_| "127.0.0.1:50061".into()).parse()?;
    let verifier = CachedVerifier::connect(&endpoint).await?;
    println!("greeter on {listen}, tokens verified by tokend at {endpoint}");
    Server::builder()
        .layer(RequireToken::new(verifier, ["greet"]))
        .add_service(GreeterServiceServer::new(Greeter))
        .serve_with_shutdown(listen, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
