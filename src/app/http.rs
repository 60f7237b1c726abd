//! The `HttpEndpoints` actor: serves `/metrics`, `/health/live`,
//! `/health/ready` and the AsyncAPI document (`/asyncapi`,
//! `/asyncapi.json`) on actix-web
//! ([`AppBuilder::serve_http`](crate::AppBuilder::serve_http)).
//!
//! Role: runs an actix-web server (one worker thread) on the socket the
//! application bound at start. `/metrics` answers the registry in
//! Prometheus' text format (consumer lag read from the broker first);
//! `/health/live` answers 200 while the server runs, which is while the
//! supervision tree does (the actor is the root's last child); and
//! `/health/ready` answers the [`Health`](crate::Health) as JSON,
//! 200 when ready and 503 when not.
//!
//! Messages: `Shutdown` (stops the server, letting requests under way
//! finish within a second).
//!
//! Owns: the server, and a handle to the listening socket it was given.
//! A restart starts a new server on the same socket: requests under way at
//! the failure are cut; the address does not change.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::{web, HttpResponse};
use kafkactor_actors::{fail, Shutdown};

use super::health::Observed;

pub(crate) struct HttpEndpoints {
    listener: TcpListener,
    observed: Observed,
    asyncapi: Arc<serde_json::Value>,
    server: Option<ServerHandle>,
}

impl HttpEndpoints {
    pub(crate) fn new(
        listener: TcpListener,
        observed: Observed,
        asyncapi: Arc<serde_json::Value>,
    ) -> Self {
        HttpEndpoints {
            listener,
            observed,
            asyncapi,
            server: None,
        }
    }
}

async fn metrics(observed: web::Data<Observed>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(observed.render().await)
}

async fn asyncapi_document(document: web::Data<serde_json::Value>) -> HttpResponse {
    HttpResponse::Ok().json(&**document)
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "live": true }))
}

async fn ready(observed: web::Data<Observed>) -> HttpResponse {
    let health = observed.health(true).await;
    if health.ready {
        HttpResponse::Ok().json(health)
    } else {
        HttpResponse::ServiceUnavailable().json(health)
    }
}

impl Actor for HttpEndpoints {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let listener = match self.listener.try_clone() {
            Ok(listener) => listener,
            Err(e) => return fail(ctx, format!("HTTP socket: {e}")),
        };
        let observed = web::Data::new(self.observed.clone());
        let asyncapi = web::Data::from(self.asyncapi.clone());
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(observed.clone())
                .app_data(asyncapi.clone())
                .route("/asyncapi", web::get().to(asyncapi_document))
                .route("/asyncapi.json", web::get().to(asyncapi_document))
                .route("/metrics", web::get().to(metrics))
                .route("/health/live", web::get().to(live))
                .route("/health/ready", web::get().to(ready))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener);
        let server = match server {
            Ok(server) => server.run(),
            Err(e) => return fail(ctx, format!("HTTP server: {e}")),
        };
        self.server = Some(server.handle());
        // The server ends only when stopped: if it ends otherwise, this
        // incarnation fails and is restarted.
        ctx.spawn(
            server
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Err(e) => fail(ctx, format!("HTTP server stopped: {e}")),
                    Ok(()) if act.server.is_some() => fail(ctx, "HTTP server stopped"),
                    Ok(()) => ctx.stop(),
                }),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(server) = self.server.take() {
            actix_rt::spawn(server.stop(false));
        }
    }
}

impl Handler<Shutdown> for HttpEndpoints {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let server = self.server.take();
        Box::pin(
            async move {
                if let Some(server) = server {
                    let _ = tokio::time::timeout(Duration::from_secs(2), server.stop(true)).await;
                }
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}
