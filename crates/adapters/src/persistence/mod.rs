//! TODO-module placeholder, filled by its issue.
