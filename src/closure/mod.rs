//! Closure: exporting an exam's grades to Cyclades and its graders' counts
//! of corrected copies to Imag'In, per closure unit (exam × establishment),
//! relaunching what was not accepted until publication, and closing
//! harmonised exams pass by pass for the academic coordinator.
//!
//! The memo's rules live here:
//! 1. a closure exports to both targets and can be relaunched any number of
//!    times until publication; after it a relaunch is refused ([`request`]);
//! 2. a relaunch re-sends only what was not accepted, under the same keys
//!    ([`engine`]);
//! 3. "transmitted to Cyclades" means accepted by the Cyclades target;
//! 4. harmonised exams are closed by harmonisation validation, never by an
//!    establishment's closure request ([`request`]).

pub mod engine;
pub mod payload;
pub mod plan;
pub mod request;
pub mod status;

pub use crate::domain::UnitState;
pub use request::{
    PassRequest, Published, UnitRequest, UnitRequested, Validation, publish, request_closure,
    request_relaunch, validate_harmonisation,
};
