// Tauri embeds ../ui/dist (tauri.conf.json `frontendDist`) at compile time.
// scripts/test and scripts/up build the UI first (cd ui && npm run build); a
// workspace build without Node (other crates' CI, clippy) gets a placeholder
// page instead of a compile error.
fn main() {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/dist");
    if !dist.join("index.html").exists() {
        let _ = std::fs::create_dir_all(&dist);
        let _ = std::fs::write(
            dist.join("index.html"),
            "<!doctype html><meta charset=utf-8><title>Berth</title>\
             <!-- berth-placeholder -->\
             <p style=\"font:16px system-ui;padding:2em\">The Berth UI was not built: \
             run <code>npm ci &amp;&amp; npm run build</code> in <code>ui/</code>, then rebuild berth-desktop.</p>",
        );
    }
    println!("cargo:rerun-if-changed=../ui/dist");
    tauri_build::build()
}
