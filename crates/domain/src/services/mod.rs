//! The use cases, implemented on top of the ports.

mod clock;
mod diagnostics;
mod gateways;
mod identity;
mod notification;
mod registration;
mod webhooks;

pub use clock::{Clock, ManualClock, SystemClock};
pub use diagnostics::{
    DiagnosticsService, TestPushError, TestPushResult, TestPushTarget, test_content,
};
pub use gateways::{ProviderGateways, ProviderTestGateways};
pub use identity::{GuardError, RegistrationGuard};
pub use notification::{HOLDER_TIMEOUT, Jitter, NotificationService, RetryPolicy};
pub use registration::{RegisterError, Registered, RegistrationService};
pub use webhooks::{
    PERSONAL_WEBHOOKS, REACTIVATION_WINDOW, SecretFor, UpkeepReport, WebhookUpkeep,
};
