// metajudge explorer: one page, hash routes, plain JavaScript, no build step.
// Every text from the run is inserted with textContent (createTextNode): never innerHTML.
// The same file runs against the server (`metajudge view RUN`) and a static bundle
// (`metajudge view RUN --bundle DIR`): a prompt list answered `complete: true` is filtered,
// sorted and paged here, with the server's rules (metajudge/viewer/queries.py: prompt_list).
// An id in an API path is the hex of its UTF-8 bytes for the server and, in a bundle, the
// SHA-256 hex of them (metajudge/viewer/bundle.py: file_key), computed here by SubtleCrypto or,
// outside a secure context (no crypto.subtle), looked up in the bundle's api/names.json.
// The page follows the index: served (not a bundle), it polls api/version.json every few
// seconds and, when the index has read something new, drops its cached overview and redraws an
// overview or prompt list in place; a prompt page says that the run has changed since it was
// drawn (a redraw would close what the reader opened) and offers to redraw it.
"use strict";

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const PAGE = 50;
const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 3000;
let overviewCache = null;
let namesCache = null;
let shownVersion = null;  // the index version the current view was drawn from

// ------------------------------------------------------------------ building blocks
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
  return node;
}
function show(...nodes) {
  main.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
}
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) {
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}
const text = (value, cls) => el("pre", {class: "text " + (cls || "")}, value === null || value === undefined ? "" : String(value));
const fmt = (v, digits) => v === null || v === undefined ? "absent" :
  typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(digits === undefined ? 3 : digits)) :
  typeof v === "boolean" ? (v ? "yes" : "no") : String(v);
const badge = (label, cls) => el("span", {class: "badge " + (cls || "")}, label);
const hex = (s) => Array.from(new TextEncoder().encode(String(s)), (b) => b.toString(16).padStart(2, "0")).join("");
const link = (href, label, attrs) => el("a", Object.assign({href}, attrs || {}), label);
const promptHref = (it, id) => `#/iter/${it}/prompt/${encodeURIComponent(id)}`;

async function api(path) {
  const answer = await fetch(path, {headers: {Accept: "application/json"}});
  if (!answer.ok) throw new Error(`${path}: ${answer.status}`);
  return answer.json();
}
async function overview() {
  if (!overviewCache) overviewCache = await api("api/overview.json");
  return overviewCache;
}
async function poll() {
  if (document.hidden || !overviewCache || overviewCache.static) return;
  let now;
  try { now = (await api("api/version.json")).version; } catch (error) { return; }
  if (!shownVersion || now === shownVersion) return;  // no run (harness only), or no change
  overviewCache = null;
  const {parts} = parseRoute();
  if (parts[0] === "harness") return;
  if (parts.length <= 2) {  // the overview or a prompt list: redraw in place
    const y = window.scrollY;
    await render();
    window.scrollTo(0, y);
  } else if (!document.getElementById("stale")) {
    main.prepend(el("p", {class: "stale", id: "stale"}, "The run has changed since this page was drawn (records added or redone). ",
      el("button", {type: "button", on: {click: () => render()}}, "Show the new figures")));
  }
}
async function idKey(id) {
  if (!(await overview()).static) return hex(id);
  if (window.crypto && crypto.subtle) {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(String(id)));
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  }
  if (!namesCache) namesCache = await api("api/names.json");
  if (!Object.hasOwn(namesCache, String(id))) throw new Error(`${id}: not in this bundle`);
  return namesCache[String(id)];
}
function problems(list) {
  return list && list.length ? el("div", {class: "problems"}, list.map((p) => el("div", {}, "⚠ " + p))) : null;
}
function kv(pairs) {
  return el("dl", {class: "kv"}, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}
function setCrumbs(items) {
  crumbs.replaceChildren(...items.map(([label, href]) => href ? link(href, label) : el("span", {}, label)));
}

// ------------------------------------------------------------------ charts (inline SVG)
function scoreCounts(counts) {  // every whole score from 0 to 5 (the judge's scale), zeros too
  const out = {};
  const keys = Object.keys(counts || {});
  const whole = keys.filter((k) => /^-?[0-9]+$/.test(k)).map(Number);
  if (whole.length === keys.length) {
    const lo = Math.min(0, ...whole), hi = Math.max(5, ...whole);
    for (let k = lo; k <= hi; k++) out[String(k)] = 0;
  }
  for (const [k, v] of Object.entries(counts || {})) out[k] = v;
  return out;
}
function barChart(counts, title) {
  const keys = Object.keys(counts);
  const max = Math.max(1, ...Object.values(counts));
  const width = 400, height = 130, bw = Math.max(4, (width - 20) / Math.max(keys.length, 1) - 6);
  const chart = svg("svg", {class: "chart", viewBox: `0 0 ${width} ${height + 20}`, role: "img"},
    svg("title", {}, title));
  keys.forEach((key, i) => {
    const h = Math.max((counts[key] / max) * (height - 20), 1);  // a zero shows as a line
    const x = 10 + i * (bw + 6);
    chart.appendChild(svg("rect", {class: counts[key] ? "bar" : "bar zero", x, y: height - h, width: bw, height: h},
      svg("title", {}, `${key}: ${counts[key]}`)));
    chart.appendChild(svg("text", {x: x + bw / 2, y: height + 12, "text-anchor": "middle"}, key));
    chart.appendChild(svg("text", {x: x + bw / 2, y: height - h - 3, "text-anchor": "middle"}, counts[key]));
  });
  return chart;
}
function lineChart(points, title) {
  const width = 400, height = 130, pad = 28;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + ((x - x0) / ((x1 - x0) || 1)) * (width - pad - 6);
  const sy = (y) => height - 14 - ((y - y0) / ((y1 - y0) || 1)) * (height - 28);
  return svg("svg", {class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img"},
    svg("title", {}, title),
    svg("line", {class: "axis", x1: pad, y1: height - 14, x2: width - 6, y2: height - 14}),
    svg("text", {x: 2, y: 12}, fmt(y1)), svg("text", {x: 2, y: height - 16}, fmt(y0)),
    svg("text", {x: width - 4, y: height - 2, "text-anchor": "end"}, `step ${x1}`),
    svg("text", {x: pad + 4, y: 12}, title),
    svg("polyline", {class: "line", points: points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ")}),
    points.length <= 60 ? points.map((p) => svg("circle", {class: "dot", cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 2.5},
      svg("title", {}, `step ${p[0]}: ${fmt(p[1], 4)}`))) : null);
}

// ------------------------------------------------------------------ overview
const HEALTH = [["score_top_share", "top score share"], ["score_entropy", "score entropy (bits)"],
  ["meta_first_share", "meta-judge first-position share"], ["meta_position_consistency", "meta-judge position consistency"],
  ["score_length_spearman", "score–length Spearman"]];
const SOURCES = ["parsed", "completed", "forced", "failed"];
// adaptive judging's audit (SPEC §5a): the summary.csv columns of audit.jsonl
const AUDIT = [["audit_prompts", "prompts audited"], ["audit_actor_retention", "actor-pair gap retention"],
  ["audit_judge_retention", "judge-pair gap retention"], ["audit_same_actor_pairs", "same actor pairs"],
  ["audit_same_judge_pairs", "same judge pairs"], ["audit_token_share", "token share"]];

function sourcesTable(counts) {
  const total = Object.values(counts || {}).reduce((a, b) => a + b, 0);
  const names = SOURCES.concat(Object.keys(counts || {}).filter((k) => !SOURCES.includes(k)));
  return el("table", {class: "sources"}, el("tr", {}, el("th", {}, "source"), el("th", {class: "num"}, "count"), el("th", {class: "num"}, "share")),
    names.map((name) => el("tr", {}, el("td", {}, name), el("td", {class: "num"}, fmt((counts || {})[name] || 0)),
      el("td", {class: "num"}, total ? fmt(((counts || {})[name] || 0) / total) : "absent"))));
}

function iterationCard(it) {
  const card = el("section", {class: "card iteration", id: `iteration-${it.iteration}`});
  card.appendChild(el("h2", {}, `Iteration ${it.iteration} `,
    it.counts ? link(`#/iter/${it.iteration}`, "prompts →", {class: "prompts-link"}) : null));
  if (it.counts) {
    card.appendChild(el("p", {class: "muted"}, Object.entries(it.counts).map(([k, v]) => `${k.replace(/_/g, " ")} ${v}`).join(" · ")));
  }
  const health = it.health || {};
  const alarms = it.alarms;
  const summary = it.summary || {};
  const healthBox = el("div", {class: "health"}, el("h3", {}, "Judge health"),
    alarms === undefined ? el("p", {class: "muted"}, "alarms: ", summary.alarms !== undefined ? fmt(summary.alarms || "none") : "absent") :
      el("p", {class: "alarms"}, Object.keys(alarms).length ? Object.entries(alarms).map(([k, why]) => el("div", {}, badge(k, "alarm"), " ", why)) : "alarms: none"),
    kv(HEALTH.map(([key, label]) => [label, fmt(health[key] !== undefined ? health[key] : summary[key])])),
    el("h3", {}, "Score sources"), sourcesTable(it.score_sources),
    el("h3", {}, "Meta-judge verdicts"), kv(Object.entries(it.meta_winners || {}).map(([k, v]) => [k, fmt(v)])),
    sourcesTable(it.meta_sources));
  const dist = it.score_distribution ? el("div", {}, el("h3", {}, "Score distribution"), barChart(scoreCounts(it.score_distribution), "judge scores")) : null;
  const pairs = el("div", {}, el("h3", {}, "Pairs by type"), kv(Object.entries(it.pairs_by_type || {}).map(([k, v]) => [k, fmt(v)])),
    el("h3", {}, "Decisions by reason"),
    el("table", {class: "reasons"}, el("tr", {}, el("th", {}, "type"), el("th", {}, "reason"), el("th", {class: "num"}, "prompts")),
      (it.decisions_by_reason || []).map((d) => el("tr", {}, el("td", {}, d.pair_type),
        el("td", {}, link(`#/iter/${it.iteration}?reason=${encodeURIComponent(d.pair_type + ":" + d.reason)}`, d.reason, {class: "reason-link"})), el("td", {class: "num"}, d.count)))));
  const curves = Object.entries(it.curves || {});
  const dpo = el("div", {}, el("h3", {}, "DPO per step"), curves.length ? curves.map(([name, pts]) => lineChart(pts, name)) : el("p", {class: "muted"}, "no train_metrics.jsonl"));
  const audit = summary.audit_prompts !== undefined ? el("div", {class: "audit"},
    el("h3", {}, "Adaptive judging audit"), kv(AUDIT.map(([key, label]) => [label, fmt(summary[key])]))) : null;
  card.appendChild(el("div", {class: "grid"}, healthBox, el("div", {}, dist, dpo), el("div", {}, pairs, audit)));
  if (it.summary) {
    card.appendChild(el("details", {class: "summary-row"}, el("summary", {}, "summary.csv row"),
      el("table", {}, Object.entries(it.summary).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, fmt(v)))))));
  } else {
    card.appendChild(el("p", {class: "muted"}, "summary.csv row: absent"));
  }
  return card;
}

async function showOverview() {
  setCrumbs([["overview", null]]);
  const data = await overview();
  const run = data.run || {};
  const out = [el("h1", {}, run.name ? `Run ${run.name}` : "Harness results")];
  if (data.run) {
    out.push(el("p", {class: "muted"}, `model ${fmt(run.model)} · backend ${fmt(run.backend)} · K ${fmt(run.K)} · N ${fmt(run.N)} · ${fmt(run.prompts_per_iteration)} prompts per iteration`));
  }
  if (data.harness) out.push(el("p", {}, link("#/harness", "Harness results →", {class: "harness-link"})));
  const listed = (data.problems || []).map((p) => `${p.name}, line ${p.line}: ${p.problem} (left out of every figure)`);
  if (data.problem_count > listed.length) listed.push(`… and ${data.problem_count - listed.length} more`);
  out.push(problems(listed));
  if (data.run && !data.iterations.length) {
    out.push(el("section", {class: "card", id: "empty-run"}, el("h2", {}, "No iteration yet"),
      el("p", {}, "The run has its config.yaml and no iter_NN/ folder yet. This page follows the run: its figures appear here as the loop writes them.")));
  }
  for (const it of data.iterations) out.push(iterationCard(it));
  show(...out.filter(Boolean));
}

// ------------------------------------------------------------------ prompt list
const FILTERS = ["q", "reason", "pair", "min_variance", "max_variance", "min_spread", "max_spread", "min_chars", "max_chars", "sort", "desc", "page"];
const SORTS = {order: "ord", variance: "score_variance", spread: "score_spread", chars: "mean_chars", score: "score_mean", id: "prompt_id", judgments: "judgments"};
const RANGES = {variance: "score_variance", spread: "score_spread", chars: "mean_chars"};
const asciiLower = (s) => String(s || "").replace(/[A-Z]/g, (c) => c.toLowerCase());

function reasonFilter(text) {  // "actor:pair" → ["actor", "pair"]; a bare reason matches either
  const at = text.indexOf(":");
  const kind = at > 0 ? text.slice(0, at) : "";
  return kind === "actor" || kind === "judge" ? [kind, text.slice(at + 1)] : [null, text];
}
function filterHere(rows, params) {  // the server's prompt_list rules, for a static bundle
  const q = asciiLower((params.get("q") || "").trim());
  const reason = params.get("reason") || "", pair = params.get("pair") || "";
  let out = rows.filter((r) => {
    if (q && !asciiLower(r.instruction).includes(q) && !asciiLower(r.prompt_id).includes(q)) return false;
    if (reason) {
      const [kind, why] = reasonFilter(reason);
      if (kind ? r[`${kind}_reason`] !== why : r.actor_reason !== why && r.judge_reason !== why) return false;
    }
    if (pair === "actor" && !r.actor_pair) return false;
    if (pair === "judge" && !r.judge_pair) return false;
    if (pair === "both" && !(r.actor_pair && r.judge_pair)) return false;
    if (pair === "none" && (r.actor_pair || r.judge_pair)) return false;
    for (const [name, col] of Object.entries(RANGES)) {
      for (const [bound, ok] of [["min", (v, b) => v >= b], ["max", (v, b) => v <= b]]) {
        const raw = params.get(`${bound}_${name}`);
        if (raw !== null && raw !== "" && Number.isFinite(Number(raw))) {
          if (r[col] === null || r[col] === undefined || !ok(r[col], Number(raw))) return false;
        }
      }
    }
    return true;
  });
  const col = SORTS[params.get("sort") || "order"] || "ord";
  const desc = params.get("desc") === "1" ? -1 : 1;
  out = out.slice().sort((a, b) => {
    const an = a[col] === null || a[col] === undefined, bn = b[col] === null || b[col] === undefined;
    if (an !== bn) return an ? 1 : -1;
    if (!an && a[col] !== b[col]) return (a[col] < b[col] ? -1 : 1) * desc;
    return a.ord - b.ord;
  });
  const last = Math.max(1, Math.ceil(out.length / PAGE));
  const page = Math.min(last, Math.max(1, parseInt(params.get("page") || "1", 10) || 1));
  return {total: out.length, page, size: PAGE, rows: out.slice((page - 1) * PAGE, page * PAGE)};
}

function toolbar(iteration, params, reasons) {
  const input = (name, type, label, extra) => el("label", {}, label,
    el("input", Object.assign({name, type, value: params.get(name) || ""}, extra || {})));
  const select = (name, label, options) => el("label", {}, label, el("select", {name},
    options.map(([value, text_]) => el("option", {value, selected: (params.get(name) || "") === value}, text_))));
  const form = el("form", {class: "toolbar", id: "filters"},
    input("q", "search", "search text", {placeholder: "instruction or id"}),
    select("reason", "decision reason", [["", "any"]].concat(reasons.map((r) => [`${r.pair_type}:${r.reason}`, `${r.pair_type} decision: ${r.reason} (${r.count})`]))),
    select("pair", "pairs", [["", "any"], ["actor", "actor pair"], ["judge", "judge pair"], ["both", "both"], ["none", "none"]]),
    input("min_variance", "number", "variance ≥", {step: "any"}), input("min_spread", "number", "spread ≥", {step: "any"}),
    input("min_chars", "number", "length ≥", {step: "any"}), input("max_chars", "number", "length ≤", {step: "any"}),
    select("sort", "sort by", [["order", "sample order"], ["variance", "score variance"], ["spread", "score spread"],
      ["chars", "response length"], ["score", "mean score"], ["judgments", "judgments"], ["id", "prompt id"]]),
    el("label", {}, "descending", el("input", {type: "checkbox", name: "desc", value: "1", checked: params.get("desc") === "1"})),
    el("button", {type: "submit"}, "Apply"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [key, value] of new FormData(form).entries()) if (value !== "") next.set(key, value);
    location.hash = `#/iter/${iteration}?${next.toString()}`;
  });
  return form;
}

async function showPrompts(iteration, params) {
  setCrumbs([["overview", "#/"], [`iteration ${iteration}`, null]]);
  const ov = await overview();
  const figures = (ov.iterations || []).find((i) => i.iteration === iteration) || {};
  const query = new URLSearchParams();
  for (const key of FILTERS) if (params.get(key)) query.set(key, params.get(key));
  let data = await api(`api/iter/${iteration}/prompts.json?${query.toString()}`);
  const limited = data.limited, held = data.rows.length;
  if (data.complete) data = filterHere(data.rows, params);
  const pages = Math.max(1, Math.ceil(data.total / data.size));
  const pageLink = (page, label) => {
    const next = new URLSearchParams(query); next.set("page", page);
    return link(`#/iter/${iteration}?${next.toString()}`, label, {class: "page-" + label});
  };
  const rows = data.rows.map((r) => el("tr", {class: "prompt-row"},
    el("td", {class: "num"}, r.ord), el("td", {}, link(promptHref(iteration, r.prompt_id), r.prompt_id, {class: "prompt-link"})),
    el("td", {}, r.instruction.length > 160 ? r.instruction.slice(0, 160) + "…" : r.instruction),
    el("td", {class: "num"}, r.responses), el("td", {class: "num"}, fmt(r.mean_chars, 0)), el("td", {class: "num"}, fmt(r.score_mean, 2)),
    el("td", {class: "num"}, fmt(r.score_variance, 2)), el("td", {class: "num"}, fmt(r.score_spread, 2)),
    el("td", {}, fmt(r.actor_reason)), el("td", {}, fmt(r.judge_reason)),
    el("td", {}, r.actor_pair ? badge("actor") : null, r.judge_pair ? badge("judge") : null)));
  show(el("h1", {}, `Iteration ${iteration}: prompts`), toolbar(iteration, params, figures.decisions_by_reason || []),
    limited ? el("p", {class: "muted", id: "limited"}, `This bundle holds the first ${held} of the iteration's ${limited} prompts (metajudge view --bundle --limit).`) : null,
    el("div", {class: "pager"}, el("span", {id: "total"}, `${data.total} prompts · page ${data.page} of ${pages}`),
      data.page > 1 ? pageLink(data.page - 1, "previous") : null, data.page < pages ? pageLink(data.page + 1, "next") : null),
    el("table", {id: "prompts"}, el("tr", {}, ["#", "prompt", "instruction", "responses", "mean length", "mean score", "variance", "spread", "actor decision", "judge decision", "pairs"].map((h, n) => el("th", {class: n === 0 || (n >= 3 && n <= 7) ? "num" : null}, h))), rows));
}

// ------------------------------------------------------------------ one prompt
function judgmentRow(iteration, promptId, j, target) {
  const id = j.id || "";
  const row = el("tr", {class: "judgment" + (target === id ? " target" : ""), "data-id": id},
    el("td", {}, link(`${promptHref(iteration, promptId)}/judgment/${encodeURIComponent(id)}`, `j${fmt(j.index)}`)),
    el("td", {class: "num score"}, fmt(j.score)), el("td", {}, badge(fmt(j.score_source), "source-" + j.score_source)),
    el("td", {}, fmt(j.finish_reason)), el("td", {class: "num"}, fmt(j.prob_score, 2)),
    el("td", {}, j.mark ? badge(j.mark, j.mark) : null),
    el("td", {}, el("details", {open: target === id}, el("summary", {}, `text (${(j.text || "").length} chars)`), text(j.text, "judgment-text"),
      j.completed_text ? [el("div", {class: "muted"}, "completed text"), text(j.completed_text)] : null,
      j.parse_error ? el("div", {class: "muted"}, "parse error: ", j.parse_error) : null, problems(j.problems))));
  return row;
}

function responseCard(iteration, page, r, route) {
  const selected = page.meta && page.meta.selection && page.meta.selection.response_id === r.id;
  const isTarget = route.kind === "response" && route.id === r.id;
  const judgmentTarget = route.kind === "judgment" ? route.id : null;
  const hasTarget = judgmentTarget && r.judgments.some((j) => j.id === judgmentTarget);
  return el("section", {class: "card response" + (isTarget ? " target" : ""), id: "r-" + hex(r.id), "data-id": r.id},
    el("h3", {}, link(`${promptHref(iteration, page.prompt.id)}/response/${encodeURIComponent(r.id)}`, r.id),
      r.mark ? badge(r.mark, r.mark) : null, selected ? badge("meta-judged", "selected") : null),
    el("p", {class: "muted"}, `${r.chars} chars · mean score ${fmt(r.mean_score, 2)} · finish ${fmt(r.finish_reason)} · ${fmt(r.completion_tokens)} tokens`),
    problems(r.problems),
    el("details", {class: "response-body", open: true}, el("summary", {}, "text"), text(r.text, "response-text")),
    el("details", {class: "judgments", open: isTarget || hasTarget},
      el("summary", {}, `${r.judgments.length} judgments · scores `, el("span", {class: "scores"}, r.judgments.map((j) => fmt(j.score)).join(", ") || "none")),
      el("table", {}, el("tr", {}, ["", "score", "source", "finish", "prob. score", "pair", "text"].map((h, n) => el("th", {class: n === 1 || n === 4 ? "num" : null}, h))),
        r.judgments.map((j) => judgmentRow(iteration, page.prompt.id, j, judgmentTarget)))));
}

const probs = (p) => Array.isArray(p) ? p.map((v) => fmt(v, 3)).join(", ") : "absent";

function diffText(segments, cls) {  // words in both texts plain, this side's own marked
  return el("pre", {class: "text diff " + cls}, (segments || []).map(([same, part]) =>
    same === true ? document.createTextNode(part) : el("span", {class: same === false ? "only" : "uncompared"}, part)));
}

function compareSide(iteration, page, view, which) {
  const side = view[which];
  const href = side.id ? `${promptHref(iteration, page.prompt.id)}/${view.pair_type === "actor" ? "response" : "judgment"}/${encodeURIComponent(side.id)}` : null;
  const facts = view.pair_type === "actor"
    ? `${fmt(side.chars)} chars · mean judge score ${fmt(side.mean_score, 2)} (${(side.judge_scores || []).map((v) => fmt(v)).join(", ") || "no judgments"})`
    : `${fmt(side.chars)} chars · its score ${fmt(side.score)} (${fmt(side.score_source)}) · rating ${fmt(side.rating, 3)} logit = Elo ${fmt(side.pair_score, 1)}`;
  return el("div", {class: "side " + which},
    el("h4", {}, badge(which, which), " ", href ? link(href, side.id) : fmt(side.id)),
    el("p", {class: "muted facts"}, facts),
    side.found ? diffText(side.segments, which + "-text") : el("p", {class: "problems"}, "⚠ this record is not in the run's files"));
}

function compareSection(iteration, page) {
  const views = page.comparisons || [];
  if (!views.length) return null;
  return el("section", {class: "card compare", id: "compare"}, el("h2", {}, "Chosen beside rejected"),
    el("p", {class: "muted"}, "Words found in one text only are marked; the texts are the records' own."),
    views.map((v) => el("div", {class: "comparison", "data-type": v.pair_type},
      el("h3", {}, `${v.pair_type} pair`, " ", el("span", {class: "muted"}, fmt(v.id))),
      el("p", {class: "decided"}, `decided by: ${v.pair_type} decision "${fmt(v.reason)}"`,
        v.pair_type === "actor" ? ` · chosen mean score ${fmt(v.chosen.pair_score, 2)} vs rejected ${fmt(v.rejected.pair_score, 2)}`
          : ` · position-weighted ratings, Elo ${fmt(v.chosen.pair_score, 1)} vs ${fmt(v.rejected.pair_score, 1)}`),
      problems(v.problems),
      el("div", {class: "two"}, compareSide(iteration, page, v, "chosen"), compareSide(iteration, page, v, "rejected")),
      v.battles ? [el("h4", {}, `meta-judge battles between j${fmt(v.chosen.index)} and j${fmt(v.rejected.index)}`),
        v.battles.length ? el("table", {class: "between"}, el("tr", {}, ["battle", "shown first (A)", "shown second (B)", "verdict", "source", "P(A), P(B)"].map((h) => el("th", {}, h))),
          v.battles.map((b) => el("tr", {class: "between-battle"},
            el("td", {}, link(`${promptHref(iteration, page.prompt.id)}/battle/${encodeURIComponent(b.id || "")}`, fmt(b.id))),
            el("td", {}, `j${fmt(b.first)}`), el("td", {}, `j${fmt(b.second)}`),
            el("td", {}, b.winner_index === null || b.winner_index === undefined ? fmt(b.winner) : [`j${b.winner_index} `, badge(b.chosen_won ? "chosen" : "rejected", b.chosen_won ? "chosen" : "rejected")]),
            el("td", {}, badge(fmt(b.winner_source), "source-" + b.winner_source)), el("td", {class: "num"}, probs(b.choice_probs)))))
          : el("p", {class: "muted"}, "no battle between these two judgments")] : null)));
}

function acrossSection(iteration, page) {
  const rows = page.across || [];
  const pairText = (r) => r.pairs.length ? r.pairs.map((p) => `${p.pair_type} ${fmt(p.chosen_score, 2)} > ${fmt(p.rejected_score, 2)}`).join(" · ") : "none";
  return el("section", {class: "card across", id: "across"}, el("h2", {}, "Across iterations"),
    rows.length > 1 ? null : el("p", {class: "muted"}, `This prompt was drawn in iteration ${iteration} only.`),
    el("table", {id: "across-table"}, el("tr", {}, ["iteration", "responses", "mean length", "mean score", "variance", "spread", "actor decision", "judge decision", "pairs (chosen > rejected score)"].map((h, n) => el("th", {class: n >= 1 && n <= 5 ? "num" : null}, h))),
      rows.map((r) => el("tr", {class: "across-row" + (r.iteration === iteration ? " target" : "")},
        el("td", {}, r.iteration === iteration ? `${r.iteration} (this page)` : link(promptHref(r.iteration, page.prompt.id), String(r.iteration), {class: "across-link"})),
        el("td", {class: "num"}, fmt(r.responses)), el("td", {class: "num"}, fmt(r.mean_chars, 0)), el("td", {class: "num"}, fmt(r.score_mean, 2)),
        el("td", {class: "num"}, fmt(r.score_variance, 2)), el("td", {class: "num"}, fmt(r.score_spread, 2)),
        el("td", {}, fmt(r.actor_reason)), el("td", {}, fmt(r.judge_reason)), el("td", {}, pairText(r))))));
}

const LAYOUT_KEY = "metajudge-explorer-responses";
function responsesLayout() {
  try { return localStorage.getItem(LAYOUT_KEY) || "columns"; } catch (error) { return "columns"; }
}

function responsesSection(iteration, page, route) {
  const layout = responsesLayout();
  const toggle = el("button", {type: "button", id: "layout-toggle", on: {click: () => {
    try { localStorage.setItem(LAYOUT_KEY, layout === "columns" ? "stacked" : "columns"); } catch (error) { /* private mode */ }
    render();
  }}}, layout === "columns" ? "Show stacked" : "Show side by side");
  return el("section", {id: "responses"},
    el("h2", {}, `${page.responses.length} responses `, toggle),
    page.decisions.filter((d) => d.pair_type === "actor").map((d) => el("p", {class: "actor-reason"}, "actor rule: ", fmt(d.reason))),
    el("div", {class: "responses " + layout}, page.responses.map((r) => responseCard(iteration, page, r, route))));
}

function metaSection(iteration, page, route) {
  const meta = page.meta;
  if (!meta) return el("section", {class: "card meta"}, el("h2", {}, "Meta-judge"), el("p", {class: "muted"}, "no meta-judge selection for this prompt"));
  const target = route.kind === "battle" ? route.id : null;
  const sel = meta.selection;
  const winnerName = (b) => b.winner === "first" ? `j${b.first}` : b.winner === "second" ? `j${b.second}` : "none";
  return el("section", {class: "card meta", id: "meta"}, el("h2", {}, "Meta-judge"),
    kv([["selected response", sel.response_id ? link(`${promptHref(iteration, page.prompt.id)}/response/${encodeURIComponent(sel.response_id)}`, sel.response_id) : "none"],
      ["score variance", fmt(sel.variance, 3)], ["scored judgments", fmt(sel.scored)], ["selection", fmt(sel.reason)],
      ["position weights ω1, ω2", meta.omega ? meta.omega.map((w) => w.toFixed(3)).join(", ") : "absent"]]),
    page.pairs.filter((p) => p.pair_type === "judge").map((p) => kv([
      ["chosen judgment", link(`${promptHref(iteration, page.prompt.id)}/judgment/${encodeURIComponent(p.chosen_id)}`, p.chosen_id, {class: "chosen-judgment"})],
      ["rejected judgment", link(`${promptHref(iteration, page.prompt.id)}/judgment/${encodeURIComponent(p.rejected_id)}`, p.rejected_id, {class: "rejected-judgment"})]])),
    el("h3", {}, "Position-weighted ratings"),
    el("table", {id: "ratings"}, el("tr", {}, ["judgment", "rating (logit)", "Elo", "pair"].map((h, n) => el("th", {class: n === 1 || n === 2 ? "num" : null}, h))),
      meta.ratings.map((r) => el("tr", {}, el("td", {}, `j${r.index}`), el("td", {class: "num"}, fmt(r.rating, 3)), el("td", {class: "num"}, fmt(r.elo, 1)),
        el("td", {}, r.mark ? badge(r.mark, r.mark) : null)))),
    el("details", {class: "battles", open: true}, el("summary", {}, `${meta.battles.length} battles`),
      el("table", {id: "battles"}, el("tr", {}, ["battle", "first (A)", "second (B)", "verdict", "source", "P(A), P(B)", "text"].map((h) => el("th", {}, h))),
        meta.battles.map((b) => el("tr", {class: "battle" + (target === b.id ? " target" : ""), "data-id": b.id || ""},
          el("td", {}, link(`${promptHref(iteration, page.prompt.id)}/battle/${encodeURIComponent(b.id || "")}`, b.id || "?")),
          el("td", {}, `j${fmt(b.first)} (score ${fmt(b.first_score)})`), el("td", {}, `j${fmt(b.second)} (score ${fmt(b.second_score)})`),
          el("td", {class: "verdict"}, `${fmt(b.winner)} → ${winnerName(b)}`), el("td", {}, badge(fmt(b.winner_source), "source-" + b.winner_source)),
          el("td", {class: "num probs"}, probs(b.choice_probs)),
          el("td", {}, el("details", {open: target === b.id}, el("summary", {}, "text"), text(b.text, "battle-text"),
            b.completed_text ? [el("div", {class: "muted"}, "completed text"), text(b.completed_text)] : null, problems(b.problems))))))));
}

function pairsSection(page) {
  return el("section", {class: "card pairs"}, el("h2", {}, "Decisions and pairs"),
    el("table", {}, el("tr", {}, ["type", "reason", "pair"].map((h) => el("th", {}, h))),
      page.decisions.map((d) => el("tr", {class: "decision"}, el("td", {}, d.pair_type), el("td", {}, fmt(d.reason)), el("td", {class: "id"}, fmt(d.pair_id))))),
    page.pairs.map((p) => el("div", {class: "pair"}, el("h3", {}, `${p.pair_type} pair ${p.id}`),
      kv([["chosen", `${p.chosen_id} (score ${fmt(p.chosen_score, 2)})`], ["rejected", `${p.rejected_id} (score ${fmt(p.rejected_score, 2)})`],
        ["rho", fmt(p.rho)], ["omega", p.omega ? p.omega.map((w) => fmt(w)).join(", ") : "absent"], ["template", fmt(p.template)]]),
      problems(p.problems))),
    el("h2", {}, "DPO rows, as written in dpo_pairs.jsonl"),
    page.dpo_rows.length ? page.dpo_rows.map((row) => el("div", {class: "dpo-row"}, el("div", {class: "muted"}, `${row.pair_type} · ${row.id} · line ${row.line}`), text(row.raw, "dpo-raw"), problems(row.problems)))
      : el("p", {class: "muted"}, "no DPO row for this prompt"));
}

async function showPrompt(iteration, promptId, route) {
  setCrumbs([["overview", "#/"], [`iteration ${iteration}`, `#/iter/${iteration}`], [promptId, null]]);
  const page = await api(`api/iter/${iteration}/prompt/${await idKey(promptId)}.json`);
  show(el("h1", {}, `Prompt ${page.prompt.id}`),
    el("p", {class: "muted"}, `iteration ${iteration} · source ${fmt(page.prompt.source)}`),
    problems((page.problems || []).map((p) => `${p} (left out of every figure)`)),
    text(page.prompt.instruction, "instruction"),
    el("nav", {class: "jump"}, "jump to: ", link("#responses", "responses", {"data-jump": "responses"}), " · ",
      link("#compare", "chosen beside rejected", {"data-jump": "compare"}), " · ", link("#meta", "meta-judge", {"data-jump": "meta"}), " · ",
      link("#across", "across iterations", {"data-jump": "across"})),
    responsesSection(iteration, page, route),
    compareSection(iteration, page),
    metaSection(iteration, page, route), acrossSection(iteration, page), pairsSection(page));
  for (const a of main.querySelectorAll("a[data-jump]")) {  // in-page jumps, not hash routes
    a.addEventListener("click", (event) => {
      event.preventDefault();
      const target = document.getElementById(a.getAttribute("data-jump"));
      if (target) target.scrollIntoView({block: "start"});
    });
  }
  const target = document.querySelector(".target");
  if (target) target.scrollIntoView({block: "center"});
}

// ------------------------------------------------------------------ harness
async function showHarness() {
  setCrumbs([["overview", "#/"], ["harness", null]]);
  const list = await api("api/harness.json");
  show(el("h1", {}, "Harness results"),
    list.length ? el("table", {id: "harness"}, el("tr", {}, ["harness", "model", "figures"].map((h) => el("th", {}, h))),
      list.map((m) => el("tr", {}, el("td", {}, m.kind), el("td", {}, link(`#/harness/${m.kind}/${encodeURIComponent(m.model)}`, m.model, {class: "harness-model"})),
        el("td", {}, Object.entries(m.metrics).map(([k, v]) => `${k} ${fmt(v, 2)}`).join(" · ")))))
      : el("p", {class: "muted"}, "no harness folder (metajudge view --harness DIR)"));
}

async function showHarnessModel(kind, model) {
  setCrumbs([["overview", "#/"], ["harness", "#/harness"], [`${kind} / ${model}`, null]]);
  const data = await api(`api/harness/${kind}/${await idKey(model)}.json`);
  const href = (id) => `#/harness/${kind}/${encodeURIComponent(model)}/q/${encodeURIComponent(id)}`;
  const pairwise = data.layout === "pairwise";
  const head = pairwise ? ["question", "instruction", "model chars", "baseline chars", "verdicts (model shown as)"] : ["question", "category", "instruction", "turn chars", "ratings"];
  show(el("h1", {}, `${kind}: ${model}`), problems(data.problems),
    el("table", {id: "questions"}, el("tr", {}, head.map((h) => el("th", {}, h))),
      data.rows.map((r) => pairwise ? el("tr", {}, el("td", {}, link(href(r.id), r.id, {class: "question-link"})), el("td", {}, r.instruction),
        el("td", {class: "num"}, fmt(r.model_chars)), el("td", {class: "num"}, fmt(r.baseline_chars)),
        el("td", {}, r.verdicts.map((v) => el("div", {}, `${fmt(v.model_position)}: ${fmt(v.verdict)} (${fmt(v.source)})`))))
        : el("tr", {}, el("td", {}, link(href(r.id), r.id, {class: "question-link"})), el("td", {}, fmt(r.category)), el("td", {}, r.instruction),
          el("td", {}, r.turn_chars.join(" / ")), el("td", {}, r.ratings.map((v) => el("div", {}, `turn ${v.turn}: ${fmt(v.score)} (${fmt(v.source)}${v.forced_score !== null && v.forced_score !== undefined ? `, read-out ${v.forced_score}` : ""})`)))))));
}

async function showHarnessItem(kind, model, id) {
  setCrumbs([["overview", "#/"], ["harness", "#/harness"], [`${kind} / ${model}`, `#/harness/${kind}/${encodeURIComponent(model)}`], [id, null]]);
  const data = await api(`api/harness/${kind}/${await idKey(model)}/${await idKey(id)}.json`);
  const item = data.item;
  if (data.layout === "pairwise") {
    show(el("h1", {}, `${kind}: ${id}` + (item.category ? ` (${item.category})` : "")), text(item.instruction, "instruction"), problems(item.problems),
      item.judge_answers_first ? el("p", {class: "muted"}, "the judge's prompt asks it to answer the question first: its own answer opens each judgment") : "",
      el("div", {class: "two"},
        el("section", {class: "card"}, el("h3", {}, `model ${model} (${item.model_chars} chars)`), text(item.model_answer, "model-answer")),
        el("section", {class: "card"}, el("h3", {}, `baseline ${fmt(item.baseline)} (${fmt(item.baseline_chars)} chars)`), text(item.baseline_answer, "baseline-answer"))),
      el("h2", {}, `${item.games.length} judgments (both orders where the harness plays both)`),
      item.games.map((g) => el("section", {class: "card game"}, el("h3", {}, `${g.id}: model shown as ${g.model_position}`),
        kv([["verdict", fmt(g.verdict)], ["source", fmt(g.verdict_source)], ["model outcome", fmt(g.model_outcome)], ["parse error", fmt(g.parse_error)]].concat(g.forced_verdict ? [["forced read-out (beside)", `${g.forced_verdict} ${JSON.stringify(g.forced_probs)}`]] : [])),
        text(g.judgment, "judgment-text"), problems(g.problems))),
      harnessAcross(kind, model, data));
  } else {
    show(el("h1", {}, `${kind}: question ${id} (${fmt(item.category)})`), el("p", {class: "muted"}, "single-answer grading: no baseline"), problems(item.problems),
      item.turns.map((turn, n) => {
        const rating = item.ratings.find((r) => r.turn === n + 1) || {};
        return el("section", {class: "card turn"}, el("h3", {}, `turn ${n + 1}: rating ${fmt(rating.score)} (${fmt(rating.score_source)})`),
          el("div", {class: "muted"}, "question"), text(item.questions[n] || ""),
          el("div", {class: "muted"}, `answer (${turn.length} chars)`), text(turn, "model-answer"),
          item.references[n] ? [el("div", {class: "muted"}, "reference answer"), text(item.references[n])] : null,
          el("div", {class: "muted"}, "judgment"), text(rating.judgment || ""), problems(rating.problems));
      }), harnessAcross(kind, model, data));
  }
}

function harnessAcross(kind, model, data) {
  const rows = data.across || [];
  const outcome = (g) => `${fmt(g.model_position)}: ${fmt(g.verdict)}${g.model_outcome === null || g.model_outcome === undefined ? "" : ` (model ${fmt(g.model_outcome, 1)})`}`;
  return el("section", {class: "card across", id: "across"}, el("h2", {}, `This question across checkpoints (${rows.length})`),
    rows.length > 1 ? null : el("p", {class: "muted"}, "Only this model folder answered it."),
    el("div", {class: "responses columns"}, rows.map((r) => el("section", {class: "card checkpoint" + (r.model === model ? " target" : ""), "data-model": r.model},
      el("h3", {}, r.model === model ? `${r.model} (this page)` : link(`#/harness/${kind}/${encodeURIComponent(r.model)}/q/${encodeURIComponent(data.item.id)}`, r.model, {class: "checkpoint-link"})),
      el("p", {class: "muted"}, `${fmt(r.chars)} chars · `, r.games ? r.games.map(outcome).join(" · ") : (r.ratings || []).map((x) => `turn ${x.turn}: ${fmt(x.score)} (${fmt(x.source)})`).join(" · ")),
      el("details", {open: true}, el("summary", {}, "answer"), text(r.answer, "checkpoint-answer"))))));
}

// ------------------------------------------------------------------ routing
function parseRoute() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?");
  const decode = (part) => { try { return decodeURIComponent(part); } catch (error) { return part; } };  // a stray %
  const parts = path.split("/").filter(Boolean).map(decode);
  return {parts, params: new URLSearchParams(query || "")};
}

async function render() {
  const {parts, params} = parseRoute();
  document.body.removeAttribute("data-ready");
  try {
    if (parts[0] === "iter" && parts.length === 2) await showPrompts(Number(parts[1]), params);
    else if (parts[0] === "iter" && parts[2] === "prompt") {
      await showPrompt(Number(parts[1]), parts[3], {kind: parts[4] || null, id: parts[5] || null});
    } else if (parts[0] === "harness" && parts.length === 1) await showHarness();
    else if (parts[0] === "harness" && parts.length === 3) await showHarnessModel(parts[1], parts[2]);
    else if (parts[0] === "harness" && parts[3] === "q") await showHarnessItem(parts[1], parts[2], parts[4]);
    else await showOverview();
  } catch (error) {
    show(el("h1", {}, "Not found"), el("p", {class: "problems", id: "error"}, String(error.message || error)));
  }
  if (overviewCache) shownVersion = overviewCache.version || null;
  document.body.setAttribute("data-ready", location.hash || "#/");
}

window.addEventListener("hashchange", render);
render();
setInterval(poll, POLL_MS);
