//! Registration changes behind the proof-of-identity guard: the one place that decides
//! who may bind or unbind a device, so the handlers stay three lines.

use std::sync::Arc;

use webex_push_domain::{
    AccessToken, DeviceToken, Registration, RegistrationGuard, RegistrationPort,
    RegistrationService,
};

use crate::error::ApiError;

pub struct Registrar {
    service: RegistrationService,
    guard: RegistrationGuard,
    store: Arc<dyn RegistrationPort>,
}

impl Registrar {
    pub fn new(
        service: RegistrationService,
        guard: RegistrationGuard,
        store: Arc<dyn RegistrationPort>,
    ) -> Self {
        Self {
            service,
            guard,
            store,
        }
    }

    /// Stores `registration` once the holder of `token` is proven to be its person
    /// (when `REGISTER_AUTH=webex`).
    pub async fn register(
        &self,
        token: Option<&AccessToken>,
        registration: Registration,
    ) -> Result<(), ApiError> {
        self.guard
            .ensure_may_register(token, &registration.person)
            .await?;
        self.service.register(registration).await?;
        Ok(())
    }

    /// Removes `device` once the holder of `token` is proven to own it (when
    /// `REGISTER_AUTH=webex`); removing an unknown device is a no-op.
    pub async fn unregister(
        &self,
        token: Option<&AccessToken>,
        device: &DeviceToken,
    ) -> Result<(), ApiError> {
        if self.guard.is_enabled() {
            let owner = self.store.device(device).await?.map(|d| d.person);
            self.guard
                .ensure_may_unregister(token, owner.as_ref())
                .await?;
        }
        self.service.unregister(device).await?;
        Ok(())
    }
}
