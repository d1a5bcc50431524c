//! The HTTP side of the test API server: list (with pages) and watch (a stream of JSON lines).

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, atomic::Ordering},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Query, State},
    http::{Method, StatusCode, Uri, header},
    response::Response,
};
use serde_json::{Value, json};
use tokio::sync::{broadcast::error::RecvError, mpsc};

use super::{
    Change, Msg, Request, Res, Shared,
    selector::{FieldSelector, LabelSelector},
};

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

async fn handle(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(namespace) = events_namespace(uri.path()) {
        return record_event(&sh, &method, namespace, &body);
    }
    let Some(res) = Res::from_path(uri.path()) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    {
        let mut st = sh.state.lock().unwrap();
        st.requests.push(Request {
            res,
            watch,
            query: q.clone(),
        });
        if res == Res::ServiceCidrs && !st.serve_service_cidrs {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
    }
    let param = |name: &str| q.get(name).map_or("", String::as_str);
    let sel = match (
        LabelSelector::parse(param("labelSelector")),
        FieldSelector::parse(param("fieldSelector")),
    ) {
        (Ok(labels), Ok(fields)) => Selectors { labels, fields },
        (Err(e), _) | (_, Err(e)) => return status(400, "BadRequest", &e),
    };
    if watch {
        watch_stream(sh, res, sel, &q)
    } else {
        list(&sh, res, &sel, &q)
    }
}

/// `{ns}` of /apis/events.k8s.io/v1/namespaces/{ns}/events[/{name}].
fn events_namespace(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/apis/events.k8s.io/v1/namespaces/")?;
    let (ns, rest) = rest.split_once('/')?;
    (rest == "events" || rest.starts_with("events/")).then_some(ns)
}

/// POST creates an event, PATCH (kube's Recorder merge-patching a repeated event into a
/// series) updates one; both are recorded as received and echoed back, as the server would.
fn record_event(sh: &Shared, method: &Method, namespace: &str, body: &[u8]) -> Response {
    let Ok(mut event) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the event is not JSON");
    };
    let code = match *method {
        Method::POST => StatusCode::CREATED,
        Method::PATCH => StatusCode::OK,
        _ => return status(405, "MethodNotAllowed", "only POST and PATCH of events"),
    };
    let mut st = sh.state.lock().unwrap();
    st.rv += 1;
    event["metadata"]["resourceVersion"] = Value::String(st.rv.to_string());
    st.events.push(super::RecordedEvent {
        method: method.to_string(),
        namespace: namespace.to_owned(),
        event: event.clone(),
    });
    json_response(code, Body::from(event.to_string()))
}

fn list(sh: &Shared, res: Res, sel: &Selectors, q: &HashMap<String, String>) -> Response {
    let mut st = sh.state.lock().unwrap();
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let (rv, mut items) = match q.get("continue").filter(|t| !t.is_empty()) {
        // Later pages come from the snapshot the first page was cut from, as etcd serves
        // them at the first page's revision.
        Some(token) => match st.continues.remove(token) {
            Some(snapshot) => snapshot,
            None => return status(410, "Expired", "the provided continue parameter is too old"),
        },
        None => {
            let items = st
                .objects
                .iter()
                .filter(|((r, ..), v)| *r == res && sel.matches(v))
                .map(|(_, v)| v.clone())
                .collect();
            (st.rv, items)
        }
    };
    let (api_version, kind) = res.type_meta();
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if limit > 0 && items.len() > limit {
        let rest = items.split_off(limit);
        st.next_token += 1;
        let token = format!("page-{}", st.next_token);
        st.continues.insert(token.clone(), (rv, rest));
        metadata["continue"] = Value::String(token);
    }
    let list = json!({
        "apiVersion": api_version,
        "kind": format!("{kind}List"),
        "metadata": metadata,
        "items": items,
    });
    json_response(StatusCode::OK, Body::from(list.to_string()))
}

/// Decrements the open-watch count when a stream's task ends.
struct OpenWatch(Arc<Shared>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

fn watch_stream(
    sh: Arc<Shared>,
    res: Res,
    sel: Selectors,
    q: &HashMap<String, String>,
) -> Response {
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let requested: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut drops = sh.drops.subscribe();
    let (replay, mut live) = {
        let st = sh.state.lock().unwrap();
        let from = if requested == 0 { st.rv } else { requested };
        if from < st.oldest_resumable {
            // What the real server does: 200, then one ERROR event with a 410 Status.
            let msg = format!("too old resource version: {from} ({})", st.oldest_resumable);
            let line = json!({ "type": "ERROR", "object": status_json(410, "Expired", &msg) });
            return json_response(StatusCode::OK, Body::from(format!("{line}\n")));
        }
        let replay: Vec<Arc<Change>> = st
            .history
            .iter()
            .filter(|c| c.rv > from && c.res == res)
            .cloned()
            .collect();
        // Subscribed under the lock that `record` holds: nothing falls between replay and live.
        (replay, sh.changes.subscribe())
    };
    sh.open_watches.fetch_add(1, Ordering::SeqCst);
    let guard = OpenWatch(sh.clone());
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let _guard = guard;
        for c in &replay {
            if let Some(line) = event_line(c, &sel) {
                let _ = tx.send(line);
            }
        }
        loop {
            tokio::select! {
                // Drops first: changes made after drop_watches() must reach only resumed watches.
                biased;
                _ = drops.changed() => break,
                _ = tx.closed() => break, // the client went away
                msg = live.recv() => match msg {
                    Ok(Msg::Change(c)) if c.res == res => {
                        if let Some(line) = event_line(&c, &sel) {
                            let _ = tx.send(line);
                        }
                    }
                    Ok(Msg::Bookmark(rv)) if bookmarks => {
                        let (api_version, kind) = res.type_meta();
                        let obj = json!({"apiVersion": api_version, "kind": kind,
                            "metadata": {"resourceVersion": rv.to_string()}});
                        let _ = tx.send(line("BOOKMARK", &obj));
                    }
                    Ok(_) => {}
                    // A lagging watcher is cut off; it resumes from its last resourceVersion.
                    Err(RecvError::Lagged(_) | RecvError::Closed) => break,
                },
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    json_response(StatusCode::OK, Body::from_stream(body))
}

/// The event a watch with these selectors sees for a change: an object that starts matching is
/// ADDED, one that stops matching is DELETED, as the real server's filtered watches do.
fn event_line(c: &Change, sel: &Selectors) -> Option<Bytes> {
    let was = c.old.as_ref().is_some_and(|o| sel.matches(o));
    let is = c.new.as_ref().is_some_and(|n| sel.matches(n));
    let (ty, obj) = match (was, is) {
        (false, true) => ("ADDED", c.new.as_ref()?),
        (true, true) => ("MODIFIED", c.new.as_ref()?),
        (true, false) => ("DELETED", c.new.as_ref().or(c.old.as_ref())?),
        (false, false) => return None,
    };
    Some(line(ty, obj))
}

fn line(ty: &str, obj: &Value) -> Bytes {
    Bytes::from(format!("{}\n", json!({ "type": ty, "object": obj })))
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    json_response(
        StatusCode::from_u16(code).unwrap(),
        Body::from(status_json(code, reason, message).to_string()),
    )
}

fn json_response(code: StatusCode, body: Body) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap()
}
