//! The status page at `/` on the master's metrics port: one self-contained HTML file
//! (no CDN, no external asset) that renders the data of `/api/v1/status` and refreshes
//! itself every two seconds. The first data set is embedded in the page, so it shows the
//! pool even before its script's first fetch.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::routing::get;
use axum::Router;

use crate::Master;

const PAGE: &str = include_str!("status_page/index.html");
const SLOT: &str = "/*INITIAL_STATUS*/null";

/// The page with `status` (JSON) embedded; `</` is escaped so no value ends the script.
fn render(status: &str) -> String {
    PAGE.replacen(SLOT, &status.replace("</", "<\\/"), 1)
}

/// `GET /`.
pub(crate) fn routes() -> Router<Arc<Master>> {
    Router::new().route(
        "/",
        get(|State(m): State<Arc<Master>>| async move {
            let status = serde_json::to_string(&m.status()).unwrap_or_else(|_| "null".into());
            (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                render(&status),
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_data_cannot_close_the_script() {
        let page = render(r#"{"name":"</script><b>x"}"#);
        assert!(page.contains(r#"{"name":"<\/script><b>x"}"#));
        assert!(!page.contains(SLOT));
    }
}
