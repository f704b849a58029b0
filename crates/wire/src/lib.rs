//! The JSON types every rollcall process shares.
//!
//! Four families live here:
//! - the seed protocol (`docs/api.md`, "The seed protocol"): [`Registration`] and [`Patch`], with Go's
//!   field names (`ServiceURL`, not `ServiceUrl`) and Go's decoding rules (keys matched
//!   case-insensitively, `null` lists read as empty);
//! - rollcall's own `/v1` views ([`ServiceView`], [`InstanceView`]) and the error body
//!   ([`ErrorBody`]) every rollcall endpoint answers with;
//! - the log service's records ([`LogRecord`]) and its answers ([`BatchResult`], [`RecordPage`]);
//! - the grading service's [`Student`] and [`Grade`], with Go's field names.
//!
//! This crate is serde (and `serde_json` for free-form fields) only: no runtime, no HTTP stack,
//! so any client can depend on it. How the servers answer an [`ErrorBody`] is `rollcall-http`'s.
mod grades;
mod logs;
mod registration;
mod views;

pub use grades::{GRADE_TYPES, Grade, NewStudent, Student};
pub use logs::{BatchResult, Level, LogRecord, RecordPage, RecordTime, Rejection, UnknownLevel};
pub use registration::{InstanceRegistration, Patch, PatchEntry, Registration};
pub use views::{CatalogEvent, ErrorBody, InstanceState, InstanceView, ServiceView, ServicesView};
