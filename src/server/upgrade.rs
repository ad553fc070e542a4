//! Requests that ask to upgrade the connection (`Connection: upgrade`, i.e. WebSocket
//! handshakes): actix-http hands them, with the TCP connection, to this service instead of its
//! HTTP/1 dispatcher.
//!
//! The request still goes through the application (routing, validation, the node's headers).
//! A `101` answer that carries a [`Handoff`] gets the WebSocket: the response is written and the
//! connection (with whatever the client already sent) is handed to the WebSocket transport,
//! which owns it from then on (see `crate::transport::ws`). Any other answer is written as a
//! plain response and the connection closed.
use std::io;
use std::rc::Rc;

use actix_codec::Framed;
use actix_http::body::{to_bytes, BodySize, BoxBody, MessageBody};
use actix_http::{h1, ConnectionType, Request, Response, StatusCode};
use actix_service::{fn_factory, fn_service, Service, ServiceFactory};
use futures_util::SinkExt;
use tokio::net::TcpStream;

use crate::transport::ws::{Handoff, Upgraded};

/// What the upgrade service is called with.
pub type UpgradeRequest = (Request, Framed<TcpStream, h1::Codec>);

/// The upgrade service of one worker, built around its own instance of the application.
pub fn factory<F, T, R, B, E>(
    make_app: F,
) -> impl ServiceFactory<
    UpgradeRequest,
    Config = (),
    Response = (),
    Error = actix_web::Error,
    InitError = (),
>
where
    F: Fn() -> T + 'static,
    T: ServiceFactory<Request, Config = (), Response = R, Error = E> + 'static,
    T::Service: 'static,
    R: Into<Response<B>> + 'static,
    E: Into<Response<BoxBody>> + 'static,
    B: MessageBody + 'static,
{
    fn_factory(move || {
        let app = make_app().new_service(());
        async move {
            let app = Rc::new(app.await.map_err(|_| ())?);
            Ok::<_, ()>(fn_service(move |(req, framed): UpgradeRequest| {
                let app = app.clone();
                async move {
                    let written = match app.call(req).await {
                        Ok(response) => answer(response.into(), framed).await,
                        Err(error) => answer(error.into(), framed).await,
                    };
                    // The client left before its answer was written: nothing more to do.
                    if let Err(error) = written {
                        tracing::debug!(%error, "could not answer an upgrade request");
                    }
                    Ok(())
                }
            }))
        }
    })
}

/// Write `response`; hand the connection over if it is an accepted upgrade.
async fn answer<B: MessageBody>(
    mut response: Response<B>,
    mut framed: Framed<TcpStream, h1::Codec>,
) -> io::Result<()> {
    let handoff = response.extensions_mut().remove::<Handoff>();
    match handoff {
        Some(Handoff(handoff)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let (head, _) = response.into_parts();
            framed
                .send(h1::Message::Item((head, BodySize::None)))
                .await?;
            let parts = framed.into_parts();
            // The transport may be gone already (client departed while the handler ran).
            let _ = handoff.send(Upgraded {
                stream: parts.io,
                read_buf: parts.read_buf,
            });
            Ok(())
        }
        _ => {
            response
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            let (head, body) = response.into_parts();
            // Answers to refused upgrades are short sentences.
            let body = to_bytes(body).await.unwrap_or_default();
            let size = BodySize::Sized(body.len() as u64);
            framed.send(h1::Message::Item((head, size))).await?;
            if !body.is_empty() {
                framed.send(h1::Message::Chunk(Some(body))).await?;
            }
            framed.send(h1::Message::Chunk(None)).await?;
            Ok(())
        }
    }
}
