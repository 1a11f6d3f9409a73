//! The use cases, implemented on top of the ports.

mod clock;
mod identity;
mod notification;
mod registration;

pub use clock::{Clock, ManualClock, SystemClock};
pub use identity::{GuardError, RegistrationGuard};
pub use notification::{HOLDER_TIMEOUT, Jitter, NotificationService, RetryPolicy};
pub use registration::{RegisterError, Registered, RegistrationService};
