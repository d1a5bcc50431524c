//! The manifest source: loading files of manifests (fixtures under tests/data/manifests) and
//! reloading them as they change (temporary directories).

use std::path::{Path, PathBuf};

use k8s_openapi::{Metadata, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kproxy::source::{
    Event, Kind,
    manifest::{LoadedManifests, ManifestError, ManifestProblem, load},
};

/// The watcher's tests, in the same test binary; `last_good`: a broken file keeps its last good
/// objects, and only changes are sent.
// Inline, so that the module is found under tests/manifest_source/.
mod manifest_source {
    pub mod last_good;
    pub mod watch;
}

pub fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/manifests")
        .join(path)
}

fn id(meta: &ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or("")),
        None => meta.name.clone().unwrap_or_default(),
    }
}

pub fn ids<T: Metadata<Ty = ObjectMeta>>(objects: &[T]) -> Vec<String> {
    objects.iter().map(|o| id(o.metadata())).collect()
}

/// (file name, document, reason) of each problem, for compact assertions.
fn problems(loaded: &LoadedManifests) -> Vec<(String, Option<usize>, String)> {
    let name = |p: &ManifestProblem| p.file.file_name().unwrap().to_string_lossy().into_owned();
    loaded
        .problems
        .iter()
        .map(|p| (name(p), p.document, p.reason.clone()))
        .collect()
}

#[test]
fn a_multi_document_yaml_file_given_as_the_path_loads_the_watched_objects_in_it() {
    let loaded = load(&data("valid/01-services.yaml")).unwrap();
    assert_eq!(ids(&loaded.services), ["default/frontend", "shop/api"]);
    assert_eq!(ids(&loaded.endpoint_slices), ["default/frontend-abc12"]);
    assert!(loaded.nodes.is_empty(), "only that one file is read");
    assert_eq!(problems(&loaded), []);
    let ports = loaded.services[0]
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap();
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].port),
        (Some("http"), 80)
    );
}

#[test]
fn a_directory_loads_its_yaml_yml_and_json_files_but_not_subdirectories_or_other_files() {
    let loaded = load(&data("valid")).unwrap();
    assert_eq!(
        ids(&loaded.services),
        ["default/frontend", "shop/api", "shop/backend"]
    );
    assert_eq!(
        ids(&loaded.endpoint_slices),
        ["default/frontend-abc12", "shop/backend-xyz"]
    );
    assert_eq!(ids(&loaded.nodes), ["node-a", "node-b"]);
    assert_eq!(problems(&loaded), []);
}

#[test]
fn a_json_file_holding_one_object_is_parsed_into_the_typed_object() {
    let loaded = load(&data("valid/02-node.json")).unwrap();
    let node = &loaded.nodes[..];
    assert_eq!(
        ids(node),
        ["node-a"],
        "a Node has no namespace, even if given one"
    );
    let spec = node[0].spec.as_ref().unwrap();
    assert_eq!(
        spec.pod_cidrs.as_deref(),
        Some(&["10.244.1.0/24".to_owned()][..])
    );
}

#[test]
fn a_list_kind_contributes_each_watched_item_in_yaml_and_in_json() {
    let yaml = load(&data("valid/03-list.yml")).unwrap();
    assert_eq!(ids(&yaml.services), ["shop/backend"]);
    assert_eq!(ids(&yaml.endpoint_slices), ["shop/backend-xyz"]);
    let json = load(&data("valid/04-list.json")).unwrap();
    assert_eq!(ids(&json.nodes), ["node-b"]);
}

#[test]
fn kinds_kproxy_does_not_watch_are_ignored_without_a_problem() {
    // 01-services.yaml holds a ConfigMap and 03-list.yml a Deployment.
    for file in ["valid/01-services.yaml", "valid/03-list.yml"] {
        let loaded = load(&data(file)).unwrap();
        assert_eq!(problems(&loaded), [], "{file}");
        assert!(
            !ids(&loaded.services)
                .iter()
                .any(|id| id.ends_with("settings"))
        );
    }
}

#[test]
fn namespaced_objects_without_a_namespace_go_to_default_like_kubectl_apply() {
    let loaded = load(&data("valid/01-services.yaml")).unwrap();
    let frontend = &loaded.services[0].metadata;
    assert_eq!(frontend.namespace.as_deref(), Some("default"));
    let slice = &loaded.endpoint_slices[0].metadata;
    assert_eq!(slice.namespace.as_deref(), Some("default"));
}

#[test]
fn each_bad_document_is_skipped_with_its_file_index_and_reason_while_the_rest_load() {
    let loaded = load(&data("bad")).unwrap();
    assert_eq!(
        ids(&loaded.services),
        ["default/good-first", "default/good-last"]
    );
    assert_eq!(ids(&loaded.nodes), ["good-in-list"]);
    let found = problems(&loaded);
    let expected: [(&str, Option<usize>, &str); 9] = [
        ("broken.json", Some(0), "JSON syntax error"),
        ("mixed.yaml", Some(1), "YAML error"),
        ("mixed.yaml", Some(2), "missing apiVersion"),
        ("mixed.yaml", Some(3), "missing kind"),
        (
            "mixed.yaml",
            Some(4),
            "Service \"wrong-type\" is invalid: invalid type: string",
        ),
        ("mixed.yaml", Some(5), "Service is missing metadata.name"),
        ("mixed.yaml", Some(6), "not a mapping but a list"),
        (
            "mixed.yaml",
            Some(7),
            "items[0]: Node is missing metadata.name",
        ),
        (
            "mixed.yaml",
            Some(8),
            "unsupported apiVersion \"discovery.k8s.io/v1beta1\"",
        ),
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for ((file, document, reason), (want_file, want_document, want_reason)) in
        found.iter().zip(expected)
    {
        assert_eq!(
            (file.as_str(), *document),
            (want_file, want_document),
            "{reason}"
        );
        assert!(
            reason.contains(want_reason),
            "{reason:?} lacks {want_reason:?}"
        );
    }
}

#[test]
fn a_yaml_syntax_error_names_the_line_in_the_file() {
    let loaded = load(&data("bad/mixed.yaml")).unwrap();
    let reason = &loaded.problems[0].reason;
    // The unclosed flow sequence is on line 8 of the file (line 3 of its document).
    assert!(reason.contains("line 8,"), "{reason}");
}

#[test]
fn a_file_that_is_not_utf8_is_skipped_as_a_whole_and_the_others_still_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), b"kind: \xff\xfe\n").unwrap();
    std::fs::write(dir.path().join("b.yaml"), service_yaml("kept", 80)).unwrap();
    let loaded = load(dir.path()).unwrap();
    assert_eq!(ids(&loaded.services), ["default/kept"]);
    let found = problems(&loaded);
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].0.as_str(), found[0].1), ("a.yaml", None));
    assert!(found[0].2.contains("not UTF-8"), "{}", found[0].2);
}

#[test]
fn of_duplicate_objects_the_later_by_file_then_document_order_wins() {
    let loaded = load(&data("duplicates")).unwrap();
    assert_eq!(ids(&loaded.services), ["default/dup", "other/dup"]);
    let port = |i: usize| {
        loaded.services[i]
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()[0]
            .port
    };
    assert_eq!(port(0), 82, "b.yaml's last document wins");
    assert_eq!(port(1), 80, "another namespace is another object");
    let found = problems(&loaded);
    let replaced: Vec<_> = found.iter().map(|(f, d, _)| (f.as_str(), *d)).collect();
    assert_eq!(replaced, [("a.yaml", Some(0)), ("b.yaml", Some(0))]);
    assert!(
        found[0].2.starts_with("duplicate Service default/dup"),
        "{}",
        found[0].2
    );
}

#[test]
fn a_missing_path_is_an_error_rather_than_an_empty_load() {
    let err = load(&data("no-such-dir")).unwrap_err();
    assert!(matches!(&err, ManifestError::Read { path, .. } if path.ends_with("no-such-dir")));
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[test]
fn into_events_always_replaces_every_kind_even_when_empty() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(dir.path()).unwrap();
    assert_eq!(
        loaded.into_events(),
        [
            Event::Replace(Kind::ServiceCidr, vec![]),
            Event::Replace(Kind::Service, vec![]),
            Event::Replace(Kind::EndpointSlice, vec![]),
            Event::Replace(Kind::Node, vec![]),
        ]
    );
    let events = load(&data("valid")).unwrap().into_events();
    let counts: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::Replace(kind, objects) => {
                assert!(objects.iter().all(|o| o.kind() == *kind));
                (*kind, objects.len())
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        counts,
        [
            (Kind::ServiceCidr, 0),
            (Kind::Service, 3),
            (Kind::EndpointSlice, 2),
            (Kind::Node, 2),
        ]
    );
}

pub fn service_yaml(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n    - port: {port}\n"
    )
}

/// Captures what kproxy logs while `f` runs (kubectl-style warnings are log lines).
fn logged(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
}

/// Issue 10, probe 5 (manifests): a misspelled field (`prots:`) is warned with its path, as
/// kubectl's strict field validation does, and the object is still used.
#[test]
fn unknown_fields_of_known_kinds_are_warned_and_the_object_is_still_used() {
    let dir = tempfile::tempdir().unwrap();
    let text = service_yaml("web", 80).replace("  ports:", "  prots: []\n  ports:") + "  typo: 1\n";
    std::fs::write(dir.path().join("web.yaml"), text).unwrap();
    let mut loaded = None;
    let log = logged(|| loaded = Some(load(dir.path()).unwrap()));
    let loaded = loaded.unwrap();
    assert_eq!(ids(&loaded.services), ["default/web"]);
    assert_eq!(problems(&loaded), []);
    assert!(log.contains(r#"unknown field "spec.prots""#), "{log}");
    assert!(log.contains(r#"unknown field "spec.typo""#), "{log}");
    assert!(
        log.contains("default/web") && log.contains("web.yaml"),
        "{log}"
    );
    // Every field of the bundled examples is known: no warning for them.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let log = logged(|| drop(load(&examples).unwrap()));
    assert!(!log.contains("unknown field"), "{log}");
}
