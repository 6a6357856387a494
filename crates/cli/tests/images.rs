//! System and image commands: berth and the real docker CLI against the same
//! private berthd must give the same exit codes and output.

mod common;
use common::*;

#[test]
fn version_and_info() {
    let env = Env::with_registry(None);
    env.same(&[
        "version",
        "-f",
        "{{.Server.Version}} {{.Server.APIVersion}}",
    ]);
    env.same(&[
        "version",
        "--format",
        "{{.Server.Platform.Name}} {{range .Server.Components}}{{.Name}}={{.Version}} {{end}}",
    ]);
    env.same(&[
        "info",
        "-f",
        "{{.ServerVersion}} {{.DockerRootDir}} {{json .RegistryConfig.Mirrors}}",
    ]);
    // The Server section of `info` is line for line docker's.
    let server = |s: &str| -> Vec<String> {
        s.lines()
            .skip_while(|l| *l != "Server:")
            .filter(|l| !l.starts_with(" NFd") && !l.starts_with(" Goroutines"))
            .map(str::to_string)
            .collect()
    };
    let b = env.berth(&["info"]);
    let d = env.docker(&["info"]);
    assert_eq!(b.code, 0, "{b:?}");
    assert_eq!(server(&b.stdout), server(&d.stdout));
    let v = env.berth(&["version"]);
    assert_eq!(v.code, 0, "{v:?}");
    assert!(v.stdout.contains("Server: Berth"), "{v:?}");
    assert!(v.stdout.contains("API version:       1.44"), "{v:?}");
}

#[test]
fn pull_images_tag_rmi_inspect_history_df() {
    let env = Env::new();
    // First pull: berth's own output (docker then finds the image up to date).
    let p = env.berth(&["pull", "busybox"]);
    assert_eq!(p.code, 0, "{p:?}");
    assert!(p.stdout.starts_with("Using default tag: latest\n"), "{p:?}");
    assert!(p.stdout.contains("Pull complete"), "{p:?}");
    assert!(
        p.stdout
            .contains("Status: Downloaded newer image for busybox:latest"),
        "{p:?}"
    );
    assert!(
        p.stdout.ends_with("docker.io/library/busybox:latest\n"),
        "{p:?}"
    );
    assert!(
        !p.stdout.contains("Downloading"),
        "no progress lines off a terminal: {p:?}"
    );
    env.same(&["pull", "busybox"]);
    env.same(&["pull", "-q", "busybox:latest"]);
    assert_eq!(env.berth(&["pull", "-q", "alpine:3.10"]).code, 0);
    env.same(&["pull", "alpine:3.10"]);
    env.same(&["images"]);
    env.same(&["images", "-q"]);
    env.same(&["images", "--digests"]);
    env.same(&["images", "--no-trunc"]);
    env.same(&["images", "busybox"]);
    env.same(&["images", "--filter", "reference=alp*"]);
    env.same(&["images", "--format", "{{.Repository}}: {{.Tag}}: {{.Size}}"]);
    env.same(&[
        "images",
        "--format",
        "table {{.Repository}}\\t{{.ID}}\\t{{.CreatedSince}}",
    ]);
    env.same(&["images", "--format", "{{json .Repository}} {{.Digest}}"]);
    env.same_after(&["tag", "busybox", "mybox:v1"], &[&["rmi", "mybox:v1"]]);
    env.same(&["tag", "busybox", "127.0.0.1:5000/team/box"]);
    // docker lists the tags of one image in Go map order: compare sorted.
    let sorted = |s: &str| {
        let mut l: Vec<&str> = s.lines().collect();
        l.sort();
        l.join("\n")
    };
    env.same_with(&["images"], sorted);
    env.same_with(&["images", "-q"], sorted);
    env.same(&["inspect", "busybox"]);
    env.same(&[
        "inspect",
        "--type",
        "image",
        "-f",
        "{{.Id}} {{json .RepoTags}} {{.Config.Cmd}}",
        "mybox:v1",
    ]);
    env.same(&[
        "inspect",
        "-f",
        "{{index .Config.Cmd 0}}|{{range .RepoTags}}<{{.}}>{{end}}",
        "busybox",
    ]);
    env.same(&["history", "busybox"]);
    env.same(&["history", "--no-trunc", "busybox"]);
    env.same(&["history", "-q", "busybox"]);
    env.same(&[
        "history",
        "--format",
        "{{.ID}}|{{.CreatedBy}}",
        "alpine:3.10",
    ]);
    env.same(&["system", "df"]);
    env.same_after(&["rmi", "mybox:v1"], &[&["tag", "busybox", "mybox:v1"]]);
    env.same_after(
        &["rmi", "127.0.0.1:5000/team/box"],
        &[&["tag", "busybox", "127.0.0.1:5000/team/box"]],
    );
    env.same(&["rmi", "mybox:v1", "127.0.0.1:5000/team/box:latest"]);
    env.same(&["images", "-a"]);
}

#[test]
fn image_errors_match_docker() {
    let env = Env::new();
    env.same(&["rmi", "nonexistent"]);
    env.same(&["tag", "nonexistent", "x:y"]);
    env.same(&["inspect", "nonexistent"]);
    env.same(&["inspect", "--type", "image", "nonexistent"]);
    env.same(&["history", "nonexistent"]);
    env.same(&["pull", "nosuchrepo/nosuchimage:1"]);
    let (b, d) = (
        env.berth(&["images", "--filter", "nonsense"]),
        env.docker(&["images", "--filter", "nonsense"]),
    );
    assert_eq!(
        (b.code, b.stderr.lines().next()),
        (d.code, d.stderr.lines().next()),
        "{b:?} {d:?}"
    );
    let (b, d) = (
        env.berth(&["ps", "--bogus"]),
        env.docker(&["ps", "--bogus"]),
    );
    assert_eq!(b.code, d.code, "{b:?} {d:?}");
    // No engine at all.
    let out = env.berth(&["-H", "unix:///nonexistent/docker.sock", "images"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("Cannot connect to the Docker daemon at unix:///nonexistent/docker.sock"),
        "{out:?}"
    );
}

#[test]
fn rmi_untag_and_delete_lines() {
    let env = Env::new();
    env.berth(&["pull", "-q", "alpine:3.10"]);
    env.berth(&["tag", "alpine:3.10", "other:1"]);
    let b = env.berth(&["rmi", "other:1"]);
    assert_eq!(b.code, 0, "{b:?}");
    assert_eq!(b.stdout, "Untagged: other:1\n");
    let b = env.berth(&["rmi", "alpine:3.10"]);
    assert_eq!(b.code, 0, "{b:?}");
    assert!(b.stdout.starts_with("Untagged: alpine:3.10\n"), "{b:?}");
    assert!(b.stdout.contains("Deleted: sha256:"), "{b:?}");
    env.same(&["images"]);
}

#[test]
fn push_to_a_registry() {
    let env = Env::new();
    let port = env.registry.as_ref().map(|r| r.port).unwrap_or(0);
    env.berth(&["pull", "-q", "busybox"]);
    let tgt = format!("127.0.0.1:{port}/pushed/box:v1");
    assert_eq!(env.berth(&["tag", "busybox", &tgt]).code, 0);
    let out = env.berth(&["push", &tgt]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "The push refers to repository [127.0.0.1:{port}/pushed/box]"
        )),
        "{out:?}"
    );
    assert!(out.stdout.contains("v1: digest: sha256:"), "{out:?}");
    env.berth(&["rmi", &tgt]);
    env.same_after(&["pull", &tgt], &[&["rmi", &tgt]]);
}
