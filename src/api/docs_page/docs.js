// Renders /openapi.json as a browsable page. Every text from the document goes in through
// textContent, never as HTML, so the page shows the document and runs nothing of it.
"use strict";

const METHODS = ["get", "put", "post", "delete", "patch"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

// Follows a local "$ref" (only "#/..." references, as utoipa writes them).
function resolve(doc, schema, seen) {
  if (schema && typeof schema.$ref === "string" && schema.$ref.startsWith("#/")) {
    if (seen.has(schema.$ref)) return { $ref: schema.$ref };
    seen.add(schema.$ref);
    let target = doc;
    for (const part of schema.$ref.slice(2).split("/")) target = target ? target[part] : undefined;
    return expand(doc, target || {}, seen);
  }
  return expand(doc, schema, seen);
}

// A copy of the schema with its references expanded, for reading as JSON.
function expand(doc, schema, seen) {
  if (Array.isArray(schema)) return schema.map((s) => resolve(doc, s, new Set(seen)));
  if (!schema || typeof schema !== "object") return schema;
  const out = {};
  for (const [key, value] of Object.entries(schema)) {
    out[key] = typeof value === "object" ? resolve(doc, value, new Set(seen)) : value;
  }
  return out;
}

function schemaText(doc, schema) {
  return JSON.stringify(resolve(doc, schema || {}, new Set()), null, 2);
}

function typeOf(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  const type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "";
  const extra = [];
  if (schema.format) extra.push(schema.format);
  if (schema.pattern) extra.push("pattern " + schema.pattern);
  if (schema.enum) extra.push("one of " + schema.enum.join(", "));
  if (schema.minimum !== undefined) extra.push("≥ " + schema.minimum);
  if (schema.maximum !== undefined) extra.push("≤ " + schema.maximum);
  return extra.length ? `${type} (${extra.join("; ")})` : type;
}

function operation(doc, path, method, op) {
  const body = el("div", { class: "op-body" });
  if (op.description) body.append(el("p", { class: "desc" }, op.description));
  const params = (op.parameters || []).map((p) => (p.$ref ? resolve(doc, p, new Set()) : p));
  if (params.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "Parameter"), el("th", {}, "In"),
      el("th", {}, "Type"), el("th", {}, "Description")));
    for (const p of params) {
      table.append(el("tr", {},
        el("td", {}, el("code", {}, p.name + (p.required ? " *" : ""))),
        el("td", {}, p.in || ""),
        el("td", {}, typeOf(p.schema)),
        el("td", { class: "desc" }, p.description || "")));
    }
    body.append(el("h4", {}, "Parameters"), table);
  }
  if (op.requestBody) {
    body.append(el("h4", {}, "Request body"));
    for (const [type, media] of Object.entries(op.requestBody.content || {})) {
      body.append(el("p", {}, el("code", {}, type)), el("pre", {}, schemaText(doc, media.schema)));
    }
  }
  body.append(el("h4", {}, "Responses"));
  const responses = el("table", {}, el("tr", {}, el("th", {}, "Status"), el("th", {}, "Description"),
    el("th", {}, "Body")));
  for (const [status, raw] of Object.entries(op.responses || {})) {
    const response = raw.$ref ? resolve(doc, raw, new Set()) : raw;
    const content = Object.entries(response.content || {});
    const bodyCell = el("td", {});
    for (const [type, media] of content) {
      const details = el("details", {}, el("summary", {}, type), el("pre", {}, schemaText(doc, media.schema)));
      bodyCell.append(details);
    }
    responses.append(el("tr", {}, el("td", {}, el("code", {}, status)),
      el("td", { class: "desc" }, response.description || ""), bodyCell));
  }
  body.append(responses);
  const summary = el("summary", {},
    el("span", { class: "method " + method }, method),
    el("span", { class: "path" }, path),
    el("span", { class: "summary" }, op.summary || ""));
  const details = el("details", { class: "op", id: op.operationId || `${method}-${path}` }, summary, body);
  details.dataset.search = [path, method, op.summary || "", (op.tags || []).join(" ")].join(" ").toLowerCase();
  return details;
}

function render(doc) {
  document.getElementById("title").textContent = `${doc.info.title} API ${doc.info.version}`;
  document.getElementById("description").textContent = doc.info.description || "";
  const byTag = new Map((doc.tags || []).map((t) => [t.name, { tag: t, ops: [] }]));
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, { tag: { name: tag }, ops: [] });
      byTag.get(tag).ops.push(operation(doc, path, method, op));
    }
  }
  const main = document.getElementById("operations");
  const nav = document.getElementById("tags");
  main.replaceChildren();
  for (const { tag, ops } of byTag.values()) {
    if (!ops.length) continue;
    const id = "tag-" + tag.name;
    nav.append(el("a", { href: "#" + id }, tag.name));
    const section = el("section", { id }, el("h2", {}, tag.name));
    if (tag.description) section.append(el("p", { class: "desc" }, tag.description));
    section.append(...ops);
    main.append(section);
  }
  document.getElementById("filter").addEventListener("input", (event) => {
    const words = event.target.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const op of main.querySelectorAll("details.op")) {
      op.hidden = !words.every((w) => op.dataset.search.includes(w));
    }
  });
}

fetch("/openapi.json")
  .then((res) => {
    if (!res.ok) throw new Error(`/openapi.json answered ${res.status}`);
    return res.json();
  })
  .then(render)
  .catch((err) => {
    const status = el("p", { class: "error" }, "Could not load the OpenAPI document: " + err.message);
    document.getElementById("operations").replaceChildren(status);
  });
