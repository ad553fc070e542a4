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
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
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
    #[error("publish rate limit exceeded; slow down")]
    RateLimited,
}

impl HttpError {
    /// A refused inbound message as an HTTP answer.
    pub fn from_inbound(error: crate::session::InboundError) -> Self {
        use crate::session::InboundError;
        match error {
            InboundError::RateLimited => HttpError::RateLimited,
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
            HttpError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Refused(_) => StatusCode::FORBIDDEN,
            HttpError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Publish(_) | HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            HttpError::RateLimited => {
                response.insert_header(("Retry-After", "1"));
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
