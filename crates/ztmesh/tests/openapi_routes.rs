//! docs/openapi.yaml must list exactly the routes the CA and node routers serve.

use std::collections::BTreeSet;

/// `(METHOD, path)` pairs from `.route("/path", get(..).post(..))` calls in router source; a
/// call may span several lines (its parentheses are balanced to find its end).
fn routes_in_source(source: &str) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let mut rest = source;
    while let Some(start) = rest.find(".route(") {
        let call = &rest[start + ".route(".len()..];
        let mut depth = 1usize;
        let mut end = call.len();
        for (i, c) in call.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let call = &call[..end];
        rest = &rest[start + ".route(".len() + end..];
        let Some(call) = call.trim_start().strip_prefix('"') else {
            continue;
        };
        let Some((path, handlers)) = call.split_once('"') else {
            continue;
        };
        // Layers applied to a route are not handlers.
        let handlers = handlers.split(".layer(").next().unwrap_or("");
        for method in ["get", "post", "put", "delete", "patch"] {
            if handlers.contains(&format!("{method}(")) {
                routes.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    routes
}

/// `(method, path)` pairs from the `paths:` section of the OpenAPI YAML (two-space indented
/// paths, four-space indented methods).
fn routes_in_openapi(yaml: &str) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let mut in_paths = false;
    let mut path = None;
    for line in yaml.lines() {
        if line == "paths:" {
            in_paths = true;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if let Some(m) = line.strip_prefix("    ").and_then(|m| m.strip_suffix(':')) {
            if ["get", "post", "put", "delete", "patch"].contains(&m) {
                routes.insert((m.to_owned(), path.clone().expect("method before path")));
            }
        }
    }
    routes
}

#[test]
fn openapi_lists_exactly_the_served_routes() {
    let mut served = routes_in_source(include_str!("../../ztmesh-ca/src/ca_service.rs"));
    served.extend(routes_in_source(include_str!(
        "../../ztmesh-node/src/node_api.rs"
    )));
    served.extend(routes_in_source(include_str!(
        "../../ztmesh-witness/src/witness_service.rs"
    )));
    let documented = routes_in_openapi(include_str!("../../../docs/openapi.yaml"));
    assert!(
        served.len() >= 10,
        "router scan found too few routes: {served:?}"
    );
    assert_eq!(
        served, documented,
        "docs/openapi.yaml and the routers disagree"
    );
}
