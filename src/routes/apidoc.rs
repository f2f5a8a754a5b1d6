//! Touches to the generated OpenAPI document that hold for every operation,
//! so each handler's annotation need not repeat them (and cannot forget).

use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder, path::Operation};

/// Media type of every DocSpot error body (RFC 9457).
const PROBLEM_JSON: &str = "application/problem+json";

/// Errors are `application/problem+json` [`crate::error::Problem`]
/// documents: responses annotated with `body = Problem` are relabelled
/// from `application/json`, and every operation gets a `default` response
/// for the error statuses it does not list one by one (any handler may
/// answer 400 for malformed input, 401/403, 404, 429 or 503).
pub struct ProblemResponses;

impl utoipa::Modify for ProblemResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        let problem_ref = || RefOr::Ref(Ref::from_schema_name("Problem"));
        for item in openapi.paths.paths.values_mut() {
            let ops: [&mut Option<Operation>; 8] = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in ops.into_iter().flatten() {
                for response in op.responses.responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let is_problem = response.content.get("application/json").is_some_and(|c| {
                        matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"))
                    });
                    if is_problem
                        && let Some(content) = response.content.shift_remove("application/json")
                    {
                        response.content.insert(PROBLEM_JSON.to_string(), content);
                    }
                }
                op.responses
                    .responses
                    .entry("default".to_string())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description("An error: an RFC 9457 problem with a stable `code`")
                                .content(
                                    PROBLEM_JSON,
                                    ContentBuilder::new().schema(Some(problem_ref())).build(),
                                )
                                .build(),
                        )
                    });
            }
        }
    }
}

/// The methods the OpenAPI document lists for a route pattern (e.g.
/// `/api/v1/doctors/{id}` → `GET, PUT`), for the `Allow` header of 405
/// answers. `None` for routes outside the document.
pub fn documented_methods(pattern: &str) -> Option<&'static str> {
    static METHODS: std::sync::OnceLock<std::collections::HashMap<String, String>> =
        std::sync::OnceLock::new();
    METHODS
        .get_or_init(|| {
            let doc = <crate::routes::ApiDoc as utoipa::OpenApi>::openapi();
            doc.paths
                .paths
                .iter()
                .map(|(path, item)| {
                    let methods = [
                        ("GET", item.get.is_some()),
                        ("PUT", item.put.is_some()),
                        ("POST", item.post.is_some()),
                        ("DELETE", item.delete.is_some()),
                        ("PATCH", item.patch.is_some()),
                    ]
                    .iter()
                    .filter(|(_, present)| *present)
                    .map(|(m, _)| *m)
                    .collect::<Vec<_>>()
                    .join(", ");
                    (path.clone(), methods)
                })
                .collect()
        })
        .get(pattern)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    use crate::routes::ApiDoc;

    #[test]
    fn every_operation_documents_problem_errors() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert!(!paths.is_empty());
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let default = &op["responses"]["default"]["content"]["application/problem+json"];
                assert_eq!(
                    default["schema"]["$ref"], "#/components/schemas/Problem",
                    "{method} {path}"
                );
                for (status, r) in op["responses"].as_object().unwrap() {
                    let ref_ = &r["content"]["application/json"]["schema"]["$ref"];
                    assert_ne!(
                        ref_, "#/components/schemas/Problem",
                        "{method} {path} {status}: problems are application/problem+json"
                    );
                }
            }
        }
        let conflict = &doc["paths"]["/api/v1/appointments"]["post"]["responses"]["409"];
        assert!(conflict["content"]["application/problem+json"].is_object());
    }

    #[test]
    fn documented_methods_name_each_route() {
        assert_eq!(
            super::documented_methods("/api/v1/doctors/{id}"),
            Some("GET, PUT")
        );
        assert_eq!(
            super::documented_methods("/api/v1/appointments"),
            Some("GET, POST")
        );
        assert_eq!(super::documented_methods("/nope"), None);
    }
}
