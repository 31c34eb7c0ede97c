//! Zhengzhao's domain core: identifiers and codes from the national standards,
//! the licence-type and licence models, the lifecycle state machine and
//! canonical JSON. Pure: no I/O, no gRPC, no database.

#![forbid(unsafe_code)]

pub mod calendar;
pub mod catalog;
pub mod citizen_id;
pub mod clock;
pub mod date;
pub mod division;
pub mod document;
pub mod draft;
pub mod holder;
pub mod identifier;
pub mod library;
pub mod mod3736;
pub mod page;
pub mod record;
pub mod status;
pub mod template;
pub mod text;
pub mod uscc;
pub mod violation;

pub use catalog::{Authority, AuthorityLevel, LicenceTypeDefinition, ServiceItem, TypeCode, ValidityRange};
pub use citizen_id::CitizenId;
pub use document::{LicenceDocument, canonical_json};
pub use draft::LicenceDraft;
pub use holder::{Holder, HolderCategory, HolderIdType, mask_id_number, parse_holder_id};
pub use identifier::{CheckForm, IdError, IssuerCode, LicenceId};
pub use record::{
    EventDetails, EventRecord, FeedEntry, HolderQuery, LastCheck, LicenceRecord, LicenceTypeRecord, TypeStatus,
};
pub use status::{LicenceState, LicenceStatus, LifecycleAction, TransitionError, check_failed, transition_forced};
pub use template::{FaceTemplate, FieldDefinition, FieldKind};
pub use text::{BoundedText, Cause, Name, Reason, TextError, UseCause};
pub use uscc::Uscc;
pub use violation::{FieldViolation, Violations};
