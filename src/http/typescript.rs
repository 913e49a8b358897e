//! TypeScript types for clients, generated from the two documents (so from
//! the same Rust types) into `src/web/static/types/dispatchd.d.ts`. The test
//! fails when the checked-in file is stale; regenerate with
//! `DISPATCHD_WRITE_TYPES=1 cargo test --lib typescript`.

use serde_json::Value;

const TYPES_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/web/static/types/dispatchd.d.ts"
);

/// The TypeScript for one JSON Schema of the subset the documents use.
fn ts(schema: &Value) -> String {
    if let Some(target) = schema["$ref"].as_str() {
        return target.rsplit('/').next().unwrap_or("unknown").to_owned();
    }
    for (key, glue) in [("oneOf", " | "), ("anyOf", " | "), ("allOf", " & ")] {
        if let Some(parts) = schema[key].as_array() {
            let parts: Vec<String> = parts.iter().map(|p| wrap(ts(p))).collect();
            return parts.join(glue);
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values.iter().map(Value::to_string).collect();
        return values.join(" | ");
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if types.is_empty() {
        return if schema["properties"].is_object() {
            object(schema)
        } else {
            "unknown".into()
        };
    }
    let parts: Vec<String> = types
        .iter()
        .map(|t| match *t {
            "string" => "string".to_owned(),
            "integer" | "number" => "number".to_owned(),
            "boolean" => "boolean".to_owned(),
            "null" => "null".to_owned(),
            "array" => format!("{}[]", wrap(ts(&schema["items"]))),
            "object" => object(schema),
            _ => "unknown".to_owned(),
        })
        .collect();
    parts.join(" | ")
}

fn wrap(text: String) -> String {
    if text.contains(" | ") || text.contains(" & ") {
        format!("({text})")
    } else {
        text
    }
}

fn object(schema: &Value) -> String {
    let Some(properties) = schema["properties"].as_object() else {
        return "Record<string, unknown>".into();
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::from("{\n");
    for (name, property) in properties {
        if let Some(doc) = property["description"].as_str() {
            out.push_str(&format!(
                "  /** {} */\n",
                doc.replace("*/", "* /").replace('\n', " ")
            ));
        }
        let optional = if required.contains(&name.as_str()) {
            ""
        } else {
            "?"
        };
        out.push_str(&format!(
            "  {name}{optional}: {};\n",
            ts(property).replace('\n', "\n  ")
        ));
    }
    out.push('}');
    out
}

/// The whole file: every component of both documents, then the two
/// socket message unions.
pub fn generate(openapi: &Value, asyncapi: &Value) -> String {
    let mut out = String::from(
        "// Generated from /api/openapi.json and /api/asyncapi.json by src/http/typescript.rs.\n\
         // Do not edit: DISPATCHD_WRITE_TYPES=1 cargo test --lib typescript\n\n",
    );
    let mut names = Vec::new();
    for doc in [openapi, asyncapi] {
        for (name, schema) in doc["components"]["schemas"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if names.contains(name) {
                continue;
            }
            names.push(name.clone());
            if let Some(doc) = schema["description"].as_str() {
                out.push_str(&format!(
                    "/** {} */\n",
                    doc.replace("*/", "* /").replace('\n', " ")
                ));
            }
            out.push_str(&format!("export type {name} = {};\n\n", ts(schema)));
        }
    }
    for (union, prefix) in [("ClientMessage", "client_"), ("ServerMessage", "server_")] {
        let messages: Vec<String> = asyncapi["components"]["messages"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, message)| wrap(ts(&message["payload"])))
            .collect();
        out.push_str(&format!(
            "/** What {} sends on the socket. */\nexport type {union} =\n  | {};\n\n",
            if prefix == "client_" {
                "a client"
            } else {
                "the server"
            },
            messages.join("\n  | ").replace('\n', "\n  ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typescript_types_are_up_to_date() {
        let generated = generate(
            &crate::http::openapi::document(),
            &crate::http::asyncapi::document(),
        );
        if std::env::var_os("DISPATCHD_WRITE_TYPES").is_some() {
            std::fs::write(TYPES_FILE, &generated).expect("write the types");
        }
        let checked_in = std::fs::read_to_string(TYPES_FILE).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{TYPES_FILE} is stale: DISPATCHD_WRITE_TYPES=1 cargo test --lib typescript"
        );
        for name in [
            "export type Order =",
            "export type ClientMessage =",
            "export type Error =",
        ] {
            assert!(generated.contains(name), "{name}");
        }
    }
}
