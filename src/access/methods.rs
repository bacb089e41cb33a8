//! Which scope each RPC needs: the one table. A method missing here is
//! refused to everyone but admin (fail closed), and a test walks every
//! method of every service the server registers, so a new RPC cannot ship
//! without a line here.

use tonic::codegen::http::Method;

use super::Scope;

/// What a call needs before it reaches its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    /// Nothing: health checks, which probes make without credentials.
    Open,
    /// Valid credentials, whatever their scopes (WhoAmI).
    Authenticated,
    /// The caller must hold this scope.
    Scope(Scope),
}

const READ: Needed = Needed::Scope(Scope::Read);
const WRITE: Needed = Needed::Scope(Scope::Write);

/// Every TaskService RPC with what it needs.
pub const TASK_SERVICE: &[(&str, Needed)] = &[
    ("/recur.v1.TaskService/GetTask", READ),
    ("/recur.v1.TaskService/ListTasks", READ),
    ("/recur.v1.TaskService/StreamResults", READ),
    ("/recur.v1.TaskService/WatchTasks", READ),
    ("/recur.v1.TaskService/RegisterTask", WRITE),
    ("/recur.v1.TaskService/UpdateTask", WRITE),
    ("/recur.v1.TaskService/PauseTask", WRITE),
    ("/recur.v1.TaskService/ResumeTask", WRITE),
    ("/recur.v1.TaskService/TriggerTask", WRITE),
    ("/recur.v1.TaskService/CancelTask", WRITE),
    ("/recur.v1.TaskService/DeleteTask", WRITE),
    // A page asks it to learn what to disable: any valid credential.
    ("/recur.v1.TaskService/WhoAmI", Needed::Authenticated),
];

/// Whether a request is for the dashboard page or its assets (or a page
/// that does not exist, answered 404): GET or HEAD on a path outside every
/// gRPC service (`/<package>.<Service>/...`). gRPC and gRPC-Web calls are
/// POSTs, so no call passes as a page. The page itself holds nothing: what
/// it shows, it asks for with the caller's token.
pub fn is_page(method: &Method, path: &str) -> bool {
    let service_path = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .is_some_and(|first| first.contains('.'));
    (method == Method::GET || method == Method::HEAD) && !service_path
}

/// Whether `request` comes from a browser (HTTP/1.x, or gRPC-Web over any
/// version) and names the server by a DNS name other than `localhost`: a
/// name another site could rebind to this server's address. IP literals
/// and `localhost` cannot be rebound; native gRPC clients (HTTP/2, not
/// gRPC-Web) are no browser.
pub fn rebindable<B>(request: &tonic::codegen::http::Request<B>) -> bool {
    use tonic::codegen::http::{Version, header};
    let web = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc-web"));
    let http1 = request.version() < Version::HTTP_2;
    if !(web || http1) {
        return false;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    !is_unrebindable_host(host)
}

/// `localhost`, or an IP literal, with or without a port.
fn is_unrebindable_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        // `[::1]:50051`, `127.0.0.1:50051`, `localhost:50051`
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Health: open, so load balancers and kubelets probe without a token.
const HEALTH: &str = "/grpc.health.v1.Health/";

/// Reflection, both versions: it describes the API, not the tasks.
const REFLECTION: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// What a call to `path` (`/package.Service/Method`) needs.
/// `open_reflection` makes reflection open like health (`--open-reflection`).
pub fn needed(path: &str, open_reflection: bool) -> Needed {
    if let Some((_, needed)) = TASK_SERVICE.iter().find(|(p, _)| *p == path) {
        return *needed;
    }
    if path.starts_with(HEALTH) {
        return Needed::Open;
    }
    if REFLECTION.iter().any(|prefix| path.starts_with(prefix)) {
        return if open_reflection {
            Needed::Open
        } else {
            Needed::Scope(Scope::Read)
        };
    }
    Needed::Scope(Scope::Admin)
}

#[cfg(test)]
mod page_tests {
    use super::*;

    #[test]
    fn pages_are_gets_outside_every_service_path() {
        assert!(is_page(&Method::GET, "/"));
        assert!(is_page(&Method::HEAD, "/assets/app.js"));
        assert!(is_page(&Method::GET, "/no/such/page"));
        assert!(!is_page(&Method::POST, "/"));
        assert!(!is_page(&Method::GET, "/recur.v1.TaskService/ListTasks"));
        assert!(!is_page(&Method::GET, "//recur.v1.TaskService/ListTasks"));
        assert!(!is_page(&Method::GET, "/%72ecur.v1.TaskService/ListTasks"));
        assert!(!is_page(&Method::GET, "/grpc.health.v1.Health/Check"));
    }

    #[test]
    fn only_names_a_site_could_rebind_are_refused() {
        for host in [
            "localhost",
            "LOCALHOST:50051",
            "127.0.0.1:50051",
            "[::1]:50051",
            "10.1.2.3",
            "::1",
        ] {
            assert!(is_unrebindable_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:50051",
            "localhost.evil.example",
            "",
        ] {
            assert!(!is_unrebindable_host(host), "{host}");
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;

    /// `/package.Service/Method` of every method in `set`.
    fn methods(set: &[u8]) -> Vec<String> {
        let set = FileDescriptorSet::decode(set).expect("descriptor set");
        let mut paths = Vec::new();
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        paths
    }

    #[test]
    fn every_task_service_rpc_has_its_own_line() {
        let rpcs = methods(crate::pb::FILE_DESCRIPTOR_SET);
        assert!(rpcs.len() >= 10, "{rpcs:?}");
        for rpc in &rpcs {
            assert!(
                TASK_SERVICE.iter().any(|(p, _)| p == rpc),
                "{rpc} has no scope in access::methods::TASK_SERVICE: add one"
            );
        }
        for (path, _) in TASK_SERVICE {
            assert!(rpcs.contains(&path.to_string()), "{path} is not an RPC");
        }
    }

    #[test]
    fn the_issue_assigns_the_scopes() {
        let scope = |m: &str| needed(&format!("/recur.v1.TaskService/{m}"), false);
        assert_eq!(scope("WhoAmI"), Needed::Authenticated);
        for m in ["GetTask", "ListTasks", "StreamResults", "WatchTasks"] {
            assert_eq!(scope(m), Needed::Scope(Scope::Read), "{m}");
        }
        for m in [
            "RegisterTask",
            "UpdateTask",
            "PauseTask",
            "ResumeTask",
            "TriggerTask",
            "CancelTask",
            "DeleteTask",
        ] {
            assert_eq!(scope(m), Needed::Scope(Scope::Write), "{m}");
        }
    }

    #[test]
    fn health_is_open_reflection_needs_read_and_the_rest_admin() {
        for rpc in methods(tonic_health::pb::FILE_DESCRIPTOR_SET) {
            assert_eq!(needed(&rpc, false), Needed::Open, "{rpc}");
        }
        for set in [
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let rpcs = methods(set);
            assert!(!rpcs.is_empty());
            for rpc in rpcs {
                assert_eq!(needed(&rpc, false), Needed::Scope(Scope::Read), "{rpc}");
                assert_eq!(needed(&rpc, true), Needed::Open, "{rpc}");
            }
        }
        assert_eq!(
            needed("/recur.v1.TaskService/DropEverything", false),
            Needed::Scope(Scope::Admin)
        );
        assert_eq!(needed("/", false), Needed::Scope(Scope::Admin));
    }
}
