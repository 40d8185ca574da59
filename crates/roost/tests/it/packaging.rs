//! The container recipe (`packaging/Containerfile`) checked against the code: the ports it
//! exposes are the default listeners, its data directory is one path everywhere, the image is
//! the static binary on `scratch`, and it copies only what `scripts/release` puts in a release
//! directory. `.ci/run` also builds and runs it
//! (`scripts/check-container`), and installs and runs the Debian package (`scripts/test-deb`).

use roost::cli::ServeArgs;
use std::collections::BTreeSet;

fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Containerfile's instructions (`KEYWORD arguments`), continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (keyword, rest) = l.split_once(' ').unwrap_or((l, ""));
            (keyword.to_owned(), rest.trim().to_owned())
        })
        .collect()
}

#[test]
fn the_container_recipe_matches_the_defaults_and_the_release() {
    let recipe = instructions(&repo_file("packaging/Containerfile"));
    let all = |keyword: &str| recipe.iter().filter(|(k, _)| k == keyword).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    let one = |keyword: &str| {
        let found = all(keyword);
        assert_eq!(found.len(), 1, "one {keyword}: {found:?}");
        found[0].clone()
    };
    let known = ["FROM", "RUN", "COPY", "USER", "WORKDIR", "VOLUME", "EXPOSE", "ENV", "STOPSIGNAL", "ENTRYPOINT", "CMD"];
    for (keyword, _) in &recipe {
        assert!(known.contains(&keyword.as_str()), "unknown instruction {keyword}");
    }

    let defaults = ServeArgs::default();
    let listeners = [defaults.mqtt_listen, defaults.mqtt_ws_listen, defaults.http_listen, defaults.mqtts_listen];
    let expected: BTreeSet<u16> = listeners.iter().map(|a| a.port()).collect();
    let exposed: BTreeSet<u16> = one("EXPOSE").split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(exposed, expected, "EXPOSE lists the default listeners");

    let data = "/var/lib/roost";
    assert_eq!(one("WORKDIR"), data);
    assert_eq!(one("VOLUME"), format!("[\"{data}\"]"));
    assert_eq!(one("ENV"), format!("ROOST_DATA_DIR={data}"));
    assert_eq!(one("USER"), "roost");
    let prepare = one("RUN");
    assert!(
        prepare.contains("roost:x:10001:10001:") && prepare.contains("chown 10001:10001 /rootfs/var/lib/roost"),
        "the user owns the data directory"
    );
    let stages = all("FROM");
    assert_eq!(stages.last().map(String::as_str), Some("scratch"), "the image holds the static binary and nothing else: {stages:?}");
    assert_eq!(one("STOPSIGNAL"), "SIGTERM", "Roost stops cleanly on SIGTERM");
    assert_eq!((one("ENTRYPOINT"), one("CMD")), ("[\"/usr/bin/roost\"]".to_owned(), "[\"serve\"]".to_owned()));

    // Every COPY source is in the release directory scripts/release makes.
    let release = repo_file("scripts/release");
    for copy in all("COPY").into_iter().filter(|c| !c.starts_with("--from=")) {
        let source = copy.split_whitespace().next().unwrap().to_owned();
        let shipped =
            source == "roost" || release.lines().any(|l| l.trim_start().starts_with("cp ") && l.split_whitespace().any(|w| w == source));
        assert!(shipped, "COPY {source}: scripts/release does not put it in the release directory");
    }
}
