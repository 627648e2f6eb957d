//! The browser pages, embedded in the binary so it serves them from any directory.

use axum::Router;
use std::sync::Arc;

use crate::AppState;

/// Routes of the pages and their assets.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
