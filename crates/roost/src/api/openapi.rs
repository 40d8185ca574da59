//! The OpenAPI 3 description of the API, served at `/api/openapi.json`.

use crate::model::TimestampMs;
use axum::Json;
use serde_json::{json, Value};

pub async fn document() -> Json<Value> {
    Json(spec())
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn rule_id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer", "format": "int64" } })
}

/// A time: epoch milliseconds or an RFC 3339 date-time.
fn time_schema() -> Value {
    json!({ "oneOf": [{ "type": "integer", "format": "int64", "minimum": 0, "maximum": TimestampMs::MAX.0 }, { "type": "string", "format": "date-time" }] })
}

fn sensor_key_params() -> Value {
    json!([
        { "name": "owner", "in": "path", "required": true, "schema": { "type": "string" } },
        { "name": "place", "in": "path", "required": true, "schema": { "type": "string" } },
        { "name": "category", "in": "path", "required": true, "schema": { "type": "string" } }
    ])
}

fn sensor_path_params() -> Value {
    let mut params = sensor_key_params();
    params.as_array_mut().expect("an array").extend(json!([
        { "name": "from", "in": "query", "required": false, "allowEmptyValue": true, "description": "Start (inclusive): epoch milliseconds or RFC 3339. Default: 24 h before `to`. Must be before `to` (else 400).", "schema": time_schema() },
        { "name": "to", "in": "query", "required": false, "allowEmptyValue": true, "description": "End (exclusive): epoch milliseconds or RFC 3339. Default: now.", "schema": time_schema() }
    ]).as_array().expect("an array").iter().cloned());
    params
}

/// `GET`, `PATCH` and `DELETE` of one sensor.
fn sensor_settings_path() -> Value {
    json!({
        "get": {
            "summary": "One sensor, as the list gives it (only one the viewer may see)",
            "parameters": sensor_key_params(),
            "responses": {
                "200": { "description": "The sensor", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Sensor" } } } },
                "401": error_response("Not logged in"),
                "404": error_response("No such sensor (or another owner's)"),
                "503": error_response("Database unavailable")
            }
        },
        "patch": {
            "summary": "Change a sensor's settings (its owner or an admin): each field given is set, `null` clears it, a field left out stays",
            "parameters": sensor_key_params(),
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/SensorPatch" } } } },
            "responses": {
                "200": { "description": "The sensor as changed", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Sensor" } } } },
                "400": error_response("Not a JSON object of these fields, or a bad value"),
                "401": error_response("Not logged in"),
                "404": error_response("No such sensor (or another owner's)"),
                "413": error_response("Body too large"),
                "503": error_response("Database unavailable")
            }
        },
        "delete": {
            "summary": "Delete a sensor with all its readings and summaries (its owner or an admin); a board still publishing creates it again",
            "parameters": sensor_key_params(),
            "responses": {
                "200": { "description": "Deleted", "content": { "application/json": { "schema": { "type": "object", "required": ["deleted", "rows"], "properties": {
                    "deleted": { "type": "string" }, "rows": { "type": "integer", "description": "Rows deleted: readings and summaries" } } } } } },
                "401": error_response("Not logged in"),
                "404": error_response("No such sensor (or another owner's)"),
                "503": error_response("Database unavailable")
            }
        }
    })
}

pub fn spec() -> Value {
    let mut readings_params = sensor_path_params();
    readings_params.as_array_mut().expect("an array").push(json!({
        "name": "buckets", "in": "query", "required": false, "allowEmptyValue": true,
        "description": "Downsample into this many min/avg/max/count buckets instead of raw readings.",
        "schema": { "type": "integer", "minimum": 1, "maximum": 10000 }
    }));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Roost API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sensors, readings and rejects of a Roost IoT hub. Times are UTC: epoch milliseconds (`*_ms`) and RFC 3339. Unless the server runs with --allow-anonymous, requests need the session cookie from POST /api/login or an API token (`roost token create`) as `Authorization: Bearer`; non-admins see only their own sensors."
        },
        "security": [{ "bearer": [] }, { "session": [] }],
        "paths": {
            "/api/login": { "post": {
                "summary": "Log in: sets the HttpOnly session cookie `roost_session` (7 days)",
                "security": [],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "additionalProperties": false, "required": ["username", "password"], "properties": {
                    "username": { "type": "string" }, "password": { "type": "string", "format": "password" } } } } } },
                "responses": {
                    "200": { "description": "Logged in", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "400": error_response("Not a JSON body with username and password"),
                    "413": error_response("Body over 16 KiB"),
                    "401": error_response("Wrong user name or password"),
                    "503": error_response("Database unavailable")
                }
            }},
            "/api/logout": { "post": {
                "summary": "Log out: ends the session and clears the cookie",
                "security": [],
                "responses": { "200": { "description": "Logged out", "content": { "application/json": { "schema": { "type": "object" } } } } }
            }},
            "/api/me": { "get": {
                "summary": "Who is logged in, with a 12-hour MQTT password for the dashboard's console",
                "responses": {
                    "200": { "description": "The user", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "401": error_response("Not logged in")
                }
            }},
            "/api/tokens": {
                "get": {
                    "summary": "API tokens: your own, or everyone's for admins (never the tokens themselves)",
                    "responses": {
                        "200": { "description": "Tokens", "content": { "application/json": { "schema": { "type": "array", "items": { "type": "object" } } } } },
                        "401": error_response("Not logged in"),
                        "503": error_response("Database unavailable")
                    }
                },
                "post": {
                    "summary": "Create an API token acting as you; the response is the only time it is shown",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "additionalProperties": false, "required": ["name"], "properties": {
                        "name": { "type": "string", "minLength": 1, "maxLength": 100 }, "days": { "type": "integer", "minimum": 1, "maximum": 3650, "nullable": true, "description": "Days until it expires; absent or null: never" } } } } } },
                    "responses": {
                        "200": { "description": "The token", "content": { "application/json": { "schema": { "type": "object" } } } },
                        "400": error_response("Bad name or days"),
                        "401": error_response("Not logged in"),
                        "413": error_response("Body over 16 KiB"),
                        "503": error_response("Database unavailable")
                    }
                }
            },
            "/api/tokens/{id}": { "delete": {
                "summary": "Revoke an API token (yours; any, for admins); it stops working at once",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer", "format": "int64" } }],
                "responses": {
                    "200": { "description": "Revoked", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "400": error_response("Bad id"),
                    "401": error_response("Not logged in"),
                    "404": error_response("No such token of yours"),
                    "503": error_response("Database unavailable")
                }
            }},
            "/api/config": { "get": {
                "summary": "Dashboard settings: staleness threshold and units",
                "security": [],
                "responses": { "200": { "description": "Settings", "content": { "application/json": { "schema": { "type": "object" } } } } }
            }},
            "/api/sensors": { "get": {
                "summary": "Every sensor with its latest value",
                "responses": {
                    "200": { "description": "Sensors ordered by owner, place, category", "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/Sensor" } } } } },
                    "401": error_response("Not logged in"),
                    "503": error_response("Database unavailable")
                }
            }},
            "/api/trends": { "get": {
                "summary": "The last hour of every sensor you may see: one average per minute, oldest first, keyed owner/place/category (sensors without readings in that hour are left out)",
                "responses": {
                    "200": { "description": "Trends", "content": { "application/json": { "schema": { "type": "object", "additionalProperties": { "type": "array", "items": { "type": "number" } } } } } },
                    "401": error_response("Not logged in"),
                    "503": error_response("Database unavailable")
                }
            }},
            "/api/sensors/{owner}/{place}/{category}": sensor_settings_path(),
            "/api/sensors/{owner}/{place}/{category}/readings": { "get": {
                "summary": "Readings of one sensor in a time range, raw or downsampled",
                "parameters": readings_params,
                "responses": {
                    "200": { "description": "`readings` ([ts_ms, value] pairs) or `buckets`", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Readings" } } } },
                    "401": error_response("Not logged in"),
                    "400": error_response("Bad parameter"),
                    "404": error_response("No such sensor"),
                    "503": error_response("Database unavailable")
                }
            }},
            "/api/sensors/{owner}/{place}/{category}/readings.csv": { "get": {
                "summary": "Readings of one sensor in a time range as CSV (streamed, any size)",
                "parameters": sensor_path_params(),
                "responses": {
                    "200": { "description": "CSV with header ts_ms,time_utc,value", "content": { "text/csv": { "schema": { "type": "string" } } } },
                    "401": error_response("Not logged in"),
                    "400": error_response("Bad parameter"),
                    "404": error_response("No such sensor"),
                    "503": error_response("Database unavailable")
                }
            }},
            "/api/alerts": { "get": {
                "summary": "Alerts pending or firing now on the sensors you may see, firing first",
                "responses": {
                    "200": { "description": "Active alerts", "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/ActiveAlert" } } } } },
                    "401": error_response("Not logged in"),
                    "503": error_response("Database unavailable")
                }
            }},
            "/api/alerts/events": { "get": {
                "summary": "Alert history: fired, resolved and acknowledged, newest first (your rules and sensors; admins all)",
                "parameters": [{ "name": "limit", "in": "query", "required": false, "allowEmptyValue": true, "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }],
                "responses": {
                    "200": { "description": "Events", "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/AlertEvent" } } } } },
                    "400": error_response("Bad parameter"),
                    "401": error_response("Not logged in"),
                    "503": error_response("Database unavailable")
                }
            }},
            "/api/alerts/rules": {
                "get": {
                    "summary": "Alert rules: your own (admins: all, with the config file's)",
                    "responses": {
                        "200": { "description": "Rules by owner and name", "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/AlertRule" } } } } },
                        "401": error_response("Not logged in"),
                        "503": error_response("Database unavailable")
                    }
                },
                "post": {
                    "summary": "Make an alert rule, owned by you and over your sensors (admins: any owner, any sensors)",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/AlertRuleSpec" } } } },
                    "responses": {
                        "201": { "description": "The rule", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/AlertRule" } } } },
                        "400": error_response("Not a valid rule"),
                        "401": error_response("Not logged in"),
                        "403": error_response("A filter reaching other owners' sensors, or another owner"),
                        "409": error_response("A rule of that name exists"),
                        "413": error_response("Body too large"),
                        "503": error_response("Database unavailable")
                    }
                }
            },
            "/api/alerts/rules/{id}": {
                "put": {
                    "summary": "Replace a rule (its states start over); rules of the config file are changed there",
                    "parameters": [rule_id_param()],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/AlertRuleReplace" } } } },
                    "responses": {
                        "200": { "description": "The rule", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/AlertRule" } } } },
                        "400": error_response("Not a valid rule"),
                        "401": error_response("Not logged in"),
                        "403": error_response("A filter reaching other owners' sensors"),
                        "404": error_response("No such rule (or another owner's)"),
                        "409": error_response("A rule of the config file, or the new name is taken"),
                        "413": error_response("Body too large"),
                        "503": error_response("Database unavailable")
                    }
                },
                "delete": {
                    "summary": "Delete a rule and its states (its history stays)",
                    "parameters": [rule_id_param()],
                    "responses": {
                        "204": { "description": "Deleted" },
                        "400": error_response("Bad parameter"),
                        "401": error_response("Not logged in"),
                        "404": error_response("No such rule (or another owner's)"),
                        "409": error_response("A rule of the config file"),
                        "503": error_response("Database unavailable")
                    }
                }
            },
            "/api/alerts/rules/{id}/silence": { "post": {
                "summary": "Silence a rule's webhooks for a while (`{\"for\": \"1h\"}`), or end a silence (`{\"for\": null}`); states still change and are published",
                "parameters": [rule_id_param()],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "additionalProperties": false, "required": ["for"],
                    "properties": { "for": { "type": "string", "nullable": true, "example": "1h" } } } } } },
                "responses": {
                    "200": { "description": "The rule", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/AlertRule" } } } },
                    "400": error_response("Bad duration"),
                    "401": error_response("Not logged in"),
                    "404": error_response("No such rule (or another owner's)"),
                    "413": error_response("Body too large"),
                    "503": error_response("Database unavailable")
                }
            }},
            "/api/alerts/rules/{id}/sensors/{owner}/{place}/{category}/acknowledge": { "post": {
                "summary": "Acknowledge a firing alert of a sensor you may see (it stays firing until it resolves)",
                "parameters": std::iter::once(rule_id_param()).chain(sensor_key_params().as_array().expect("an array").iter().cloned()).collect::<Vec<_>>(),
                "responses": {
                    "204": { "description": "Acknowledged" },
                    "400": error_response("Bad parameter"),
                    "401": error_response("Not logged in"),
                    "404": error_response("Not firing for that sensor"),
                    "503": error_response("Database unavailable")
                }
            }},
            "/api/rejects": { "get": {
                "summary": "The most recent rejected publishes, newest first",
                "parameters": [{ "name": "limit", "in": "query", "required": false, "allowEmptyValue": true, "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }],
                "responses": {
                    "200": { "description": "Rejects", "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/Reject" } } } } },
                    "401": error_response("Not logged in"),
                    "400": error_response("Bad parameter"),
                    "503": error_response("Database unavailable")
                }
            }},
            "/api/stats": { "get": {
                "summary": "Broker, ingest and database counters (admins)",
                "responses": {
                    "200": { "description": "Counters", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "401": error_response("Not logged in"),
                    "403": error_response("Not an admin"),
                    "503": error_response("Database unavailable")
                }
            }},
            "/api/sessions": { "get": {
                "summary": "Persistent MQTT sessions (clean session 0), online and offline, with their queued messages and expiry (admins)",
                "responses": {
                    "200": { "description": "Sessions ordered by client id", "content": { "application/json": { "schema": { "type": "array", "items": { "type": "object" } } } } },
                    "401": error_response("Not logged in"),
                    "403": error_response("Not an admin")
                }
            }},
            "/api/sessions/{client_id}": { "delete": {
                "summary": "Drop a persistent session with its subscriptions and queued messages; an online one is disconnected (admins)",
                "parameters": [{ "name": "client_id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": {
                    "200": { "description": "Dropped", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "401": error_response("Not logged in"),
                    "403": error_response("Not an admin"),
                    "404": error_response("No persistent session with this client id")
                }
            }},
            "/api/users": {
                "get": {
                    "summary": "Users with their role and extra grants, never passwords (logged-in admins; refused with --allow-anonymous)",
                    "responses": {
                        "200": { "description": "Users ordered by name", "content": { "application/json": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/User" } } } } },
                        "401": error_response("Not logged in"),
                        "403": error_response("Not an admin")
                    }
                },
                "post": {
                    "summary": "Add a user: a device user may publish and subscribe under iot/NAME/# only, an admin everywhere (admins). Without `password` one is generated and answered once.",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "additionalProperties": false, "required": ["name"], "properties": {
                        "name": { "type": "string", "description": "One topic level: 1 to 64 characters, no '/', '+', '#', spaces or leading '$'" },
                        "admin": { "type": "boolean", "default": false },
                        "password": { "type": "string", "format": "password", "minLength": 8, "nullable": true, "description": "Absent or null: generated" } } } } } },
                    "responses": {
                        "200": { "description": "Created; `password` only when generated", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/User" } } } },
                        "400": error_response("Invalid name or password, or the user exists"),
                        "401": error_response("Not logged in"),
                        "403": error_response("Not an admin"),
                        "413": error_response("Body too large")
                    }
                }
            },
            "/api/users/{name}": { "delete": {
                "summary": "Remove a user with their grants and tokens; connections already open stay until they reconnect (admins; not yourself)",
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": {
                    "200": { "description": "Removed", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "400": error_response("Your own account"),
                    "401": error_response("Not logged in"),
                    "403": error_response("Not an admin"),
                    "404": error_response("No such user")
                }
            }},
            "/api/users/{name}/password": { "post": {
                "summary": "Set a user's password; without `password` one is generated and answered once (admins)",
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "additionalProperties": false, "properties": {
                    "password": { "type": "string", "format": "password", "minLength": 8, "nullable": true, "description": "Absent or null: generated" } } } } } },
                "responses": {
                    "200": { "description": "Changed", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "400": error_response("Password too short"),
                    "401": error_response("Not logged in"),
                    "403": error_response("Not an admin"),
                    "404": error_response("No such user"),
                    "413": error_response("Body too large")
                }
            }},
            "/api/users/{name}/grants": {
                "post": {
                    "summary": "Also let a user publish and/or subscribe under a topic filter, e.g. home/+/cmd (admins)",
                    "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "additionalProperties": false, "required": ["filter"], "properties": {
                        "filter": { "type": "string" },
                        "publish": { "type": "boolean", "default": true },
                        "subscribe": { "type": "boolean", "default": true } } } } } },
                    "responses": {
                        "200": { "description": "The user with the grant", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/User" } } } },
                        "400": error_response("Not a topic filter, or neither publish nor subscribe"),
                        "401": error_response("Not logged in"),
                        "403": error_response("Not an admin"),
                        "404": error_response("No such user"),
                        "413": error_response("Body too large")
                    }
                },
                "delete": {
                    "summary": "Take back a grant (admins)",
                    "parameters": [
                        { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } },
                        { "name": "filter", "in": "query", "required": true, "schema": { "type": "string" } }
                    ],
                    "responses": {
                        "200": { "description": "The user without the grant", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/User" } } } },
                        "400": error_response("Missing filter"),
                        "401": error_response("Not logged in"),
                        "403": error_response("Not an admin"),
                        "404": error_response("No such user or grant")
                    }
                }
            },
            "/api/openapi.json": { "get": {
                "summary": "This document",
                "security": [],
                "responses": { "200": { "description": "OpenAPI 3 document", "content": { "application/json": { "schema": { "type": "object" } } } } }
            }},
            "/healthz": { "get": {
                "summary": "200 while readings are committed; 503 with the reason while commits fail, records wait over 5 s, or the database does not answer",
                "security": [],
                "responses": {
                    "200": { "description": "Healthy", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "503": { "description": "Degraded: {\"status\":\"degraded\",\"ingest\":\"commits failing for 12 s: disk full (...)\"}", "content": { "application/json": { "schema": { "type": "object" } } } }
                }
            }},
            "/metrics": { "get": {
                "summary": "Prometheus metrics (admins; use an API token)",
                "responses": {
                    "200": { "description": "Text exposition format 0.0.4", "content": { "text/plain": { "schema": { "type": "string" } } } },
                    "401": error_response("Not logged in"),
                    "403": error_response("Not an admin")
                }
            }}
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "An API token from `roost token create USER`" },
                "session": { "type": "apiKey", "in": "cookie", "name": "roost_session", "description": "Set by POST /api/login" }
            },
            "schemas": {
            "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } },
            "AlertRuleSpec": { "type": "object", "additionalProperties": false, "required": ["name", "topic"],
                "description": "Exactly one of `above`, `below` or `stale`",
                "properties": {
                    "name": { "type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$" },
                    "topic": { "type": "string", "description": "A topic filter over the sensors' topics; + and # allowed", "example": "iot/+/sensor/greenhouse/temperature" },
                    "above": { "type": "number", "nullable": true }, "below": { "type": "number", "nullable": true },
                    "clear": { "type": "number", "nullable": true, "description": "Hysteresis: a firing alert resolves only at or past this level (default: the threshold)" },
                    "for": { "type": "string", "nullable": true, "description": "Hold time before firing", "example": "10m" },
                    "stale": { "type": "string", "nullable": true, "description": "No reading for this long fires", "example": "15m" },
                    "severity": { "type": "string", "nullable": true, "enum": ["info", "warning", "critical", null] },
                    "webhook": { "type": "string", "nullable": true, "description": "http:// or https:// URL the notices are POSTed to" },
                    "owner": { "type": "string", "nullable": true, "description": "Admins only: make the rule in another user's name" }
                } },
            "AlertRuleReplace": { "type": "object", "additionalProperties": false, "required": ["name", "topic"],
                "description": "An AlertRuleSpec; a rule as GET shows it is taken too (its read-only fields are ignored)",
                "properties": {
                    "name": { "type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$" }, "topic": { "type": "string" },
                    "above": { "type": "number", "nullable": true }, "below": { "type": "number", "nullable": true },
                    "clear": { "type": "number", "nullable": true }, "for": { "type": "string", "nullable": true },
                    "stale": { "type": "string", "nullable": true },
                    "severity": { "type": "string", "nullable": true, "enum": ["info", "warning", "critical", null] },
                    "webhook": { "type": "string", "nullable": true }, "owner": { "type": "string", "nullable": true },
                    "id": { "type": "integer" }, "from_config": { "type": "boolean" }, "silenced_until": { "type": "integer", "nullable": true }
                } },
            "AlertRule": { "type": "object", "required": ["id", "name", "topic", "owner", "severity", "from_config"], "properties": {
                "id": { "type": "integer" }, "name": { "type": "string" }, "topic": { "type": "string" }, "owner": { "type": "string" },
                "above": { "type": "number", "nullable": true }, "below": { "type": "number", "nullable": true },
                "clear": { "type": "number", "nullable": true }, "for": { "type": "string", "nullable": true },
                "stale": { "type": "string", "nullable": true }, "severity": { "type": "string", "enum": ["info", "warning", "critical"] },
                "webhook": { "type": "string", "nullable": true }, "from_config": { "type": "boolean" },
                "silenced_until": { "type": "integer", "nullable": true, "description": "Epoch ms" } } },
            "AlertSensor": { "type": "object", "required": ["owner", "place", "category"], "properties": {
                "owner": { "type": "string" }, "place": { "type": "string" }, "category": { "type": "string" } } },
            "ActiveAlert": { "type": "object", "required": ["rule_id", "rule", "owner", "severity", "sensor", "state", "since"], "properties": {
                "rule_id": { "type": "integer" }, "rule": { "type": "string" }, "owner": { "type": "string" },
                "severity": { "type": "string", "enum": ["info", "warning", "critical"] }, "sensor": { "$ref": "#/components/schemas/AlertSensor" },
                "state": { "type": "string", "enum": ["pending", "firing"] }, "since": { "type": "integer", "description": "Epoch ms" },
                "value": { "type": "number", "nullable": true }, "acknowledged_by": { "type": "string", "nullable": true }, "silenced_until": { "type": "integer", "nullable": true } } },
            "AlertEvent": { "type": "object", "required": ["id", "at", "rule_id", "rule", "owner", "sensor", "state", "severity"], "properties": {
                "id": { "type": "integer" }, "at": { "type": "integer", "description": "Epoch ms" }, "rule_id": { "type": "integer" },
                "rule": { "type": "string" }, "owner": { "type": "string" }, "sensor": { "$ref": "#/components/schemas/AlertSensor" },
                "state": { "type": "string", "enum": ["firing", "resolved", "acknowledged"] }, "severity": { "type": "string", "enum": ["info", "warning", "critical"] },
                "value": { "type": "number", "nullable": true }, "by": { "type": "string", "nullable": true } } },
            "User": { "type": "object", "required": ["name", "admin", "created_at_ms", "grants"], "properties": {
                "name": { "type": "string" }, "admin": { "type": "boolean" },
                "created_at_ms": { "type": "integer" }, "created_at": { "type": "string", "format": "date-time" },
                "password": { "type": "string", "description": "Only when generated by this request: shown once" },
                "grants": { "type": "array", "items": { "type": "object", "required": ["filter", "publish", "subscribe"], "properties": {
                    "filter": { "type": "string" }, "publish": { "type": "boolean" }, "subscribe": { "type": "boolean" }, "description": { "type": "string" } } } }
            }},
            "Sensor": { "type": "object", "required": ["owner", "place", "category"], "properties": {
                "owner": { "type": "string" }, "place": { "type": "string" }, "category": { "type": "string" },
                "last_value": { "type": "number", "nullable": true },
                "last_seen_ms": { "type": "integer", "nullable": true },
                "last_seen": { "type": "string", "format": "date-time", "nullable": true },
                "display_name": { "type": "string", "nullable": true, "description": "The dashboard's name for it (null: its key)" },
                "unit": { "type": "string", "nullable": true, "description": "Its own unit (null: the category's)" },
                "hidden": { "type": "boolean", "description": "Left out of the dashboard's overview" },
                "retention": { "type": "string", "description": "How long its raw readings are kept: a duration such as 30d, or forever" },
                "retention_from": { "type": "string", "enum": ["sensor", "rule", "default"], "description": "Its own retention, a --retention-rule, or --retention" }
            }},
            "SensorPatch": { "type": "object", "additionalProperties": false, "properties": {
                "display_name": { "type": "string", "nullable": true, "maxLength": 100 },
                "unit": { "type": "string", "nullable": true, "maxLength": 32 },
                "hidden": { "type": "boolean" },
                "retention": { "type": "string", "nullable": true, "description": "A duration with a unit (7d, 12h) up to 36500d, or forever; null follows the rules again" }
            }},
            "Bucket": { "type": "object", "required": ["start", "min", "avg", "max", "count"], "properties": {
                "start": { "type": "integer", "description": "Bucket start, epoch ms" },
                "min": { "type": "number" }, "avg": { "type": "number" }, "max": { "type": "number" }, "count": { "type": "integer" }
            }},
            "Readings": { "type": "object", "required": ["sensor", "range"], "properties": {
                "sensor": { "type": "object" },
                "range": { "type": "object" },
                "bucket_ms": { "type": "integer" },
                "series": { "type": "string", "enum": ["raw", "minutes", "hours"], "description": "What the buckets were computed from: the coarsest series that gives each bucket several rows and still reaches back to `from`" },
                "raw_kept_from_ms": { "type": "integer", "nullable": true, "description": "Raw readings before this time are deleted by the retention (null: kept forever)" },
                "buckets": { "type": "array", "items": { "$ref": "#/components/schemas/Bucket" } },
                "readings": { "type": "array", "items": { "type": "array", "items": { "type": "number" }, "minItems": 2, "maxItems": 2 } }
            }},
            "Reject": { "type": "object", "required": ["received_at_ms", "received_at", "client_id", "topic", "payload", "reason"], "properties": {
                "received_at_ms": { "type": "integer" }, "received_at": { "type": "string", "format": "date-time" },
                "client_id": { "type": "string" }, "topic": { "type": "string" },
                "payload": { "type": "string", "description": "The first 256 bytes, as text" },
                "reason": { "type": "string" }
            }}
        }}
    })
}
