//! HTTP/1.1 on [`hyper`] with the limits this project's listeners and
//! clients keep: one request per connection, a cap on the request head and
//! on the body, one deadline for reading the whole request, and bounds on
//! writing the answer (in total and without progress).
//!
//! * [`server`]: [`server::serve_one`] answers one request on a connection
//!   with a handler's [`server::Response`]; what it refuses itself
//!   (400/408/411/413/431) is reported as a [`server::Refusal`]. The
//!   gateway's listeners (enrollment, installer, admin API, metrics) and the
//!   agent's metrics endpoint use it.
//! * [`client`]: [`client::send`] makes one request on a connection the
//!   caller opened (plain TCP or TLS) and reads the answer up to a size cap.
//!   The agent's enrollment and nsxcli's admin API client use it.
//!
//! hyper parses and writes the messages; this crate only adds what hyper
//! leaves to its user (the deadlines, the body cap, the 408 and the
//! refusal counts) and converts to the small request and response types
//! the handlers work with.

#![forbid(unsafe_code)]

pub mod client;
pub mod server;

pub use client::{ClientError, Reply};
pub use server::{Body, HttpError, Limits, Refusal, Request, Response, serve_one};
