//! WebKitGTK settings that keep the Linux app light (issue #6, bench/app).
//!
//! Measured under Xvfb (Mesa llvmpipe), 20 running containers, containers
//! page open; docs/BENCHMARKS.md "Desktop app" has the figures:
//!
//! - `WEBKIT_DISABLE_COMPOSITING_MODE=1`: no accelerated compositing.  The
//!   web process no longer renders GL layers (with llvmpipe, in its own
//!   anonymous memory): ≈ 100 MB less RSS, first paint no slower.  The page
//!   is a list and a few small charts; it does not need a compositor.
//! - `WEBKIT_DISABLE_DMABUF_RENDERER=1`: no DMA-BUF buffer sharing between
//!   the web and UI processes (the path that needs a GPU's buffers); with
//!   compositing off it is not used, and it spares probing for it.
//!
//! Each is set only when the user has not set it (so
//! `WEBKIT_DISABLE_COMPOSITING_MODE=0 berth-desktop` turns compositing back
//! on).  `BERTH_WEBKIT_DEFAULTS=0` leaves the whole environment alone.
//!
//! Then, per web view: the "document viewer" cache model (the smallest
//! memory and disk caches: the UI is one page served from the binary) and
//! off for features the UI never uses (WebGL, Web Audio, media streams and
//! sources, encrypted media, the back/forward page cache, DNS prefetching).

use tauri::{Runtime, WebviewWindow};

/// The variables and the values [`set_env_defaults`] gives them.
pub const ENV_DEFAULTS: &[(&str, &str)] = &[
    ("WEBKIT_DISABLE_COMPOSITING_MODE", "1"),
    ("WEBKIT_DISABLE_DMABUF_RENDERER", "1"),
];

/// What to set, given the current value of each variable and of
/// `BERTH_WEBKIT_DEFAULTS` (pure, for the tests).
pub fn env_to_set(
    get: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<(&'static str, &'static str)> {
    if get("BERTH_WEBKIT_DEFAULTS").is_some_and(|v| v == "0") {
        return Vec::new();
    }
    ENV_DEFAULTS
        .iter()
        .filter(|(k, _)| get(k).is_none())
        .copied()
        .collect()
}

/// Sets [`ENV_DEFAULTS`] the user has not set.  Call it first thing in
/// `main`, while the process has one thread.
pub fn set_env_defaults() {
    for (k, v) in env_to_set(|k| std::env::var_os(k)) {
        tracing::debug!("{k}={v} (WebKit default of berth-desktop)");
        // Sound here: `main` calls this before any other thread exists, so
        // nothing reads the environment concurrently.
        std::env::set_var(k, v);
    }
}

/// The per-view settings (cache model, unused features off).
pub fn tune<R: Runtime>(window: &WebviewWindow<R>) {
    let r = window.with_webview(|pw| {
        use webkit2gtk::{CacheModel, SettingsExt, WebContextExt, WebViewExt};
        let view = pw.inner();
        if let Some(ctx) = view.context() {
            ctx.set_cache_model(CacheModel::DocumentViewer);
        }
        if let Some(s) = WebViewExt::settings(&view) {
            s.set_enable_webgl(false);
            s.set_enable_webaudio(false);
            s.set_enable_media_stream(false);
            s.set_enable_mediasource(false);
            s.set_enable_encrypted_media(false);
            s.set_enable_page_cache(false);
            s.set_enable_dns_prefetching(false);
        }
        tracing::debug!("web view tuned: document-viewer cache model, unused features off");
    });
    if let Err(e) = r {
        tracing::warn!("could not tune the web view: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn sets_what_the_user_has_not_set() {
        assert_eq!(env_to_set(env(&[])), ENV_DEFAULTS.to_vec());
        let got = env_to_set(env(&[("WEBKIT_DISABLE_COMPOSITING_MODE", "0")]));
        assert_eq!(got, vec![("WEBKIT_DISABLE_DMABUF_RENDERER", "1")]);
        // an empty value is the user's choice too
        let got = env_to_set(env(&[("WEBKIT_DISABLE_DMABUF_RENDERER", "")]));
        assert_eq!(got, vec![("WEBKIT_DISABLE_COMPOSITING_MODE", "1")]);
    }

    #[test]
    fn berth_webkit_defaults_0_leaves_the_environment_alone() {
        assert!(env_to_set(env(&[("BERTH_WEBKIT_DEFAULTS", "0")])).is_empty());
        assert_eq!(
            env_to_set(env(&[("BERTH_WEBKIT_DEFAULTS", "1")])).len(),
            ENV_DEFAULTS.len()
        );
    }
}
