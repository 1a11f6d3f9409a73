//! The core of webex-push: what a registration, a call and a push are, the ports the
//! outside world plugs into, and the services that implement the use cases.
//!
//! Nothing here knows about HTTP, SQL or APNs wire formats; adapters translate.

pub mod ports;
pub mod services;
pub mod types;

pub use ports::{
    BoxError, Claim, DeliveryReport, EventClaim, IncomingCallPort, NotifyError, PushGateway,
    RegistrationPort, StoreError, StoredEvent, TakeOver, TestPushGateway,
};
pub use ports::{DirectoryError, IdentityError, IdentityPort, WebhookDirectory};
pub use services::{
    Clock, DiagnosticsService, ManualClock, NotificationService, PERSONAL_WEBHOOKS,
    ProviderGateways, ProviderTestGateways, RegisterError, Registered, RegistrationService,
    RetryPolicy, SecretFor, SystemClock, TestPushError, TestPushResult, TestPushTarget,
    UpkeepReport, WebhookUpkeep, test_content,
};
pub use services::{GuardError, RegistrationGuard};
pub use types::*;
