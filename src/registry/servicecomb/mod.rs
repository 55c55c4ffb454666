//! The ServiceComb Service Center adapter (REST API v4). Being written.
