//! Errors that become HTTP responses: a status and a plain-text message saying what is wrong.
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use thiserror::Error;

use crate::protocol::atmosphere::RequestError;
use crate::topic::PublishError;

/// An error answered to the client.
#[derive(Debug, Error)]
pub enum HttpError {
    #[error(transparent)]
    Atmosphere(#[from] RequestError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Too large, too slow or unreadable.
    #[error(transparent)]
    RequestBody(#[from] crate::transport::request_body::BodyError),
    #[error("message body is not valid UTF-8")]
    InvalidUtf8,
    #[error("could not read the request body: {0}")]
    Body(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Unavailable(&'static str),
    /// The application refused the message, saying why.
    #[error("message refused: {0}")]
    Refused(String),
    /// The gate refused the client (its token, an id, a namespace, a limit).
    #[error(transparent)]
    Gate(#[from] crate::session::Refused),
}

impl HttpError {
    /// A refused inbound message as an HTTP answer.
    pub fn from_inbound(error: crate::session::InboundError) -> Self {
        use crate::session::InboundError;
        match error {
            InboundError::Gate(refused) => HttpError::Gate(refused),
            InboundError::Refused(why) => HttpError::Refused(why),
            other => HttpError::Body(other.to_string()),
        }
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        match self {
            HttpError::Atmosphere(RequestError::UnsupportedVersion(_)) => {
                StatusCode::NOT_IMPLEMENTED
            }
            HttpError::Atmosphere(_) | HttpError::InvalidUtf8 | HttpError::Body(_) => {
                StatusCode::BAD_REQUEST
            }
            HttpError::RequestBody(error) => error.status(),
            HttpError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Refused(_) => StatusCode::FORBIDDEN,
            HttpError::Gate(refused) => refused.status(),
            HttpError::Publish(_) | HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            HttpError::Gate(refused) => {
                if *refused == crate::session::Refused::RateLimited {
                    response.insert_header(("Retry-After", "1"));
                }
                response.insert_header(("X-Atmosphere-error", refused.to_string()));
            }
            // What atmosphere.js reports through its error callback.
            HttpError::Refused(why) => {
                response.insert_header(("X-Atmosphere-error", why.as_str()));
            }
            _ => {}
        }
        if let HttpError::Atmosphere(RequestError::UnsupportedVersion(_)) = self {
            response.insert_header((
                "X-Atmosphere-error",
                "Atmosphere Protocol version not supported.",
            ));
        }
        response
            .content_type("text/plain; charset=utf-8")
            .body(format!("{self}\n"))
    }
}
