// A thin fetch-based REST client over the generated types: every method of a service, bound to
// its google.api.http rule read from the generated descriptors (no hand-written URLs).
//
// JSON is what Envoy's transcoder reads and prints: proto field names (snake_case), 64-bit
// integers as strings, enums as names, RFC 3339 times. Requests are built with protobuf-es
// (`create`, then `toJson` with proto field names); responses are parsed with `fromJson`, so
// int64 fields arrive as bigint and unknown (newer) response fields are ignored.
import { create, fromJson, getOption, hasOption, toJson } from "@bufbuild/protobuf";
import { http } from "./gen/google/api/annotations_pb.js";

const PARAM = /\{([^}=]+)(=[^}]*)?\}/g;

/** An error answer: google.rpc.Status with its ErrorInfo reason (e.g. "FIELD_UNKNOWN"). */
export class BillingError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.name = "BillingError";
    this.status = status;
    this.code = body?.code ?? 0;
    this.body = body;
    const info = (body?.details ?? []).find((d) => String(d["@type"] ?? "").endsWith("google.rpc.ErrorInfo"));
    this.reason = info?.reason;
    this.metadata = info?.metadata ?? {};
  }
}

function bindings(method) {
  if (!hasOption(method, http)) return [];
  const rule = getOption(method, http);
  return [rule, ...rule.additionalBindings]
    .filter((b) => b.pattern.case && b.pattern.case !== "custom")
    .map((b) => ({ verb: b.pattern.case, template: b.pattern.value, body: b.body }));
}

function take(json, dotted) {
  const parts = dotted.split(".");
  let node = json;
  for (const part of parts.slice(0, -1)) {
    if (node == null || typeof node !== "object") return undefined;
    node = node[part];
  }
  if (node == null || typeof node !== "object") return undefined;
  const last = parts[parts.length - 1];
  const value = node[last];
  delete node[last];
  return value;
}

function query(params, prefix, value) {
  if (value === undefined || value === null) return;
  if (Array.isArray(value)) {
    for (const item of value) query(params, prefix, item);
  } else if (typeof value === "object") {
    for (const [key, item] of Object.entries(value)) query(params, `${prefix}.${key}`, item);
  } else {
    params.append(prefix, String(value));
  }
}

/**
 * A client for one generated service (e.g. CatalogService from gen/billing/v1/catalog_pb.js).
 * With `token` (a bearer token from IssueToken) it calls the browser surface /api/v1; with
 * `apiKey` (a service key) the backend surface /mgt/v1.
 */
export function createRestClient(service, options) {
  const base = options.baseUrl.replace(/\/+$/, "");
  const doFetch = options.fetch ?? globalThis.fetch;
  const surface = options.token ? "/api/" : "/mgt/";
  const headers = { "content-type": "application/json" };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.apiKey) headers["x-api-key"] = options.apiKey;
  const client = {};
  for (const method of service.methods) {
    const all = bindings(method);
    const binding = all.find((b) => b.template.startsWith(surface)) ?? all[0];
    if (!binding) continue;
    client[method.localName] = async (init = {}, callOptions = {}) => {
      const json = toJson(method.input, create(method.input, init), { useProtoFieldName: true });
      const path = binding.template.replace(PARAM, (_, name) => {
        const value = take(json, name);
        if (value === undefined || value === "") {
          throw new TypeError(`${method.name}: ${name} is required (it is part of the URL)`);
        }
        // One segment, whatever the value holds: "/" is %2F (Envoy decodes it back for the
        // variable), so an id such as "../../accounts" cannot reach another path with this
        // client's credentials; "." and ".." cannot be a URL segment in any spelling.
        const text = String(value);
        if (text === "." || text === "..") {
          throw new TypeError(`${method.name}: ${name} cannot be "${text}" (it is part of the URL)`);
        }
        return encodeURIComponent(text);
      });
      let body;
      let rest = json;
      if (binding.body === "*") {
        body = json;
        rest = {};
      } else if (binding.body) {
        body = json[binding.body] ?? {};
        delete json[binding.body];
      }
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(rest)) query(params, key, value);
      const qs = params.toString();
      const response = await doFetch(base + path + (qs ? `?${qs}` : ""), {
        method: binding.verb.toUpperCase(),
        headers: { ...headers, ...(callOptions.headers ?? {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: callOptions.signal,
      });
      const text = await response.text();
      let data = {};
      if (text) {
        try {
          data = JSON.parse(text);
        } catch {
          data = { message: text };
        }
      }
      if (!response.ok) throw new BillingError(response.status, data);
      return fromJson(method.output, data, { ignoreUnknownFields: true });
    };
  }
  return client;
}
