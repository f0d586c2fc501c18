// The SAGE-nano page: plain JavaScript over the REST API (no build step). Every number shown comes from the
// server's measurements; switching depth swaps texts the server already rendered (no new request).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { reportId: null, report: null, texts: {}, comparison: null, diff: null, simpler: null };
const OUTCOMES = { same_answer: "same answer", different_answer: "different answer", no_answer: "no answer" };

const pct = (p) => `${Math.round(p * 100)}%`;
// One calibrated scale: a calibrated value where the report has one, else the raw one (said to be raw).
const prob = (item) => item.calibrated_prob ?? item.prob;
const stepConfidence = (step) => step.calibrated_confidence ?? step.confidence;
const depth = () => document.querySelector("input[name=depth]:checked").value;

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;  // a style attribute would break the page's CSP
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// --- talking to the server ---------------------------------------------------------------------------------

async function problem(response) {
  let detail = response.statusText;
  try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
  const retry = response.headers.get("Retry-After");
  return retry ? `${detail} (retry in ${retry} s)` : detail;
}

async function getJSON(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(await problem(response));
  return response.json();
}

async function postJSON(url, body) {
  const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
                                      body: JSON.stringify(body) });
  if (!response.ok) throw new Error(await problem(response));
  return response.json();
}

// POSTs to a …/stream endpoint and reads its server-sent events; resolves with the `result` event's data.
async function streamPost(url, body, onEvent) {
  const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
                                      body: JSON.stringify(body) });
  if (!response.ok) throw new Error(await problem(response));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = parseEvent(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (event.name === "result") return event.data;
      if (event.name === "error") throw new Error(event.data.detail);
      onEvent(event);
    }
  }
  throw new Error("the server closed the stream before the result");
}

function parseEvent(raw) {
  let name = "message", data = "";
  for (const line of raw.split("\n")) {
    if (line.startsWith("event: ")) name = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  return { name, data: data ? JSON.parse(data) : null };
}

// --- progress and errors -----------------------------------------------------------------------------------

function startProgress() {
  $("progress").replaceChildren();
  $("error").hidden = true;
}

function showProgress(event) {
  if (event.name === "phase") {
    for (const item of $("progress").children) item.classList.remove("current");
    $("progress").append(element("li", { class: "current" }, event.data.name.replace("_", " ")));
  } else if (event.name === "queued") {
    $("progress").append(element("li", {}, event.data.pending > 1 ? `queued (${event.data.pending} ahead)` : "queued"));
  } else if (event.name === "chain" && $("explain-button").disabled) {  // the new question's chain, as it comes
    $("result").hidden = false;
    $("steps").replaceChildren(element("li", { class: "step-text" }, event.data.text));
  }
}

function showError(error) {
  $("error").textContent = `Error: ${error.message}`;
  $("error").hidden = false;
}

async function busy(button, work) {
  button.disabled = true;
  startProgress();
  try { await work(); } catch (error) { showError(error); } finally {
    button.disabled = false;
    for (const item of $("progress").children) item.classList.remove("current");
  }
}

// --- the report ----------------------------------------------------------------------------------------------

function showReport(id, report, texts) {
  Object.assign(state, { reportId: id, report, texts, comparison: null });
  $("result").hidden = false;
  $("interact").hidden = false;
  $("decision").hidden = true;
  showNotice(report);
  $("steps").replaceChildren(...report.steps.map(stepItem));
  const confidence = report.calibrated_answer_confidence ?? report.answer_confidence;
  const scale = report.calibrated_answer_confidence === null ? "raw" : "calibrated";
  $("answer").textContent = report.answer === null ? "The chain states no answer."
    : `Answer: ${report.answer}` + (confidence === null ? "" : ` (confidence ${pct(confidence)}, ${scale})`);
  $("headline").replaceChildren(...headline(report).map((line) => element("p", {}, line)));
  showHeatmap(report);
  $("download").href = `/v1/reports/${id}/json`;
  $("whatif-question").value = report.question;
  $("no-decisions").hidden = report.decision_points.length > 0;
  const hesitations = (report.hesitations ?? []).length;
  $("no-decisions").textContent = hesitations ? "No decision point: where the model hesitated "
      + `(${hesitations} ${hesitations === 1 ? "place" : "places"}), every alternative led to the same answer.`
    : report.top_decision_score === null ? "No token crossed the decision threshold."
    : `No token's decision score reached the threshold (${report.options.threshold}); the closest call scored `
      + `${report.top_decision_score.toFixed(2)}. Lower the decision threshold and explain again to see it.`;
  showTexts();
}

// The notice every view opens with when the question is unlike the model's training (render/notices.py).
function showNotice(report) {
  const familiarity = report.familiarity;
  const unusual = Boolean(familiarity && familiarity.unusual);
  $("notice").hidden = !unusual;
  if (unusual) {
    const reasons = familiarity.reasons.join("; ");
    $("notice").textContent = "This question is unlike what the model was trained on" + (reasons ? `: ${reasons}` : "")
      + ". Treat the answer and the explanation with caution.";
  }
}

// Causal claims that held, apart from the consistency checks (render/checks.py words them the same way).
function headline(report) {
  const v = report.validation;
  if (!v) return ["Validation: not run; no claim was tested on the model."];
  const lines = [v.total === 0
    ? "No causal claim was made, so none was tested on the model (no decision point and no tested span)."
    : `${v.verified} of ${v.total} causal claims held under intervention (these are claims about the `
      + "model's computation; they do not say the answer is right)."];
  if (v.consistency_total) {
    lines.push(`${v.consistency_passed} of ${v.consistency_total} consistency checks agreed (numbers read twice).`);
  }
  if (v.removed_claims.length) {
    lines.push(`${v.removed_claims.length} refuted claims were taken out of the explanation, ${v.repaired} replaced by `
      + "the next-ranked span that held (see the explanation's “Refuted (not facts)”).");
  }
  return lines;
}

// Whether the checks refuted the engine's claim about this item (refuted claims are never shown as facts; a SAGE
// model's own refuted sentence is listed with the refuted claims and hides nothing the engine measured).
function refuted(kind, matches) {
  const claims = [...state.report.claims, ...(state.report.validation?.removed_claims ?? [])];
  return claims.some((c) => c.kind === kind && c.author !== "model" && c.status === "refuted" && matches(c.stated));
}

function stepItem(step) {
  const points = new Map(state.report.decision_points.map((point) => [point.position, point]));
  const text = element("span", { class: "step-text" });
  for (const token of state.report.tokens.filter((t) => t.step === step.index)) {
    const point = points.get(token.index);
    if (!point) { text.append(token.token); continue; }
    text.append(element("button", {
      class: "decision-token", type: "button", "aria-pressed": "false", "data-position": point.position,
      "aria-label": `decision point: ${token.token.trim() || "space"}, ${pct(prob(point))} likely; show alternatives`,
      onclick: (event) => showDecision(point, event.currentTarget),
    }, token.token));
  }
  const calibrated = step.calibrated_confidence !== null && step.calibrated_confidence !== undefined;
  const label = `step ${step.index + 1} ${calibrated ? "confidence" : "raw token probability"}`;
  const bar = element("span", { class: "bar" },
    element("meter", { min: "0", max: "1", value: String(stepConfidence(step)), "aria-label": label }),
    `${pct(stepConfidence(step))}${calibrated ? "" : " raw"}${step.is_answer ? " · answer" : ""}`);
  return element("li", {}, text, " ", bar);
}

function showHeatmap(report) {
  const shares = new Map();
  for (const step of report.steps) {
    for (const dep of step.dependencies) {
      if (dep.span.source !== "question" || dep.status === "refuted") continue;
      const key = `${dep.span.start}:${dep.span.end}`;
      shares.set(key, Math.max(shares.get(key) || 0, dep.share));
    }
  }
  const spans = [...shares.entries()].map(([key, share]) => [...key.split(":").map(Number), share])
    .sort((a, b) => a[0] - b[0]);
  const top = Math.max(...spans.map((s) => s[2]), 1e-9);
  const nodes = [];
  let cursor = 0;
  for (const [start, end, share] of spans) {
    if (start < cursor) continue;
    nodes.push(report.question.slice(cursor, start));
    const alpha = (0.12 + 0.78 * share / top).toFixed(2);
    nodes.push(element("span", { style: `background: rgba(234, 88, 12, ${alpha})`,
                                 title: `up to ${pct(share)} of a step's dependency score` },
                       report.question.slice(start, end)));
    cursor = end;
  }
  nodes.push(report.question.slice(cursor));
  $("heatmap").replaceChildren(...nodes);
}

function showTexts() {
  const d = depth();
  $("explanation").textContent = state.texts[d] || "";
  if (state.comparison) $("comparison").textContent = state.comparison[d];
  if (state.diff) $("diff-text").textContent = state.diff[d];
  if (state.simpler) $("simpler-text").textContent = state.simpler[d];
}

// --- decision points and "why this over that" ------------------------------------------------------------------

function showDecision(point, button) {
  for (const other of document.querySelectorAll(".decision-token")) other.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-pressed", "true");
  state.comparison = null;
  $("comparison").hidden = true;
  const where = point.step === null ? "outside the steps" : `in step ${point.step + 1}`;
  $("decision-heading").textContent =
    `Decision point ${where}: the model chose “${point.token}” (${pct(prob(point))} likely)`;
  const shown = point.alternatives.filter((alt) => !refuted("alternative",
    (stated) => stated.position === point.position && stated.token_id === alt.token_id));
  const rows = shown.map((alt) => element("tr", {},
    element("td", {}, element("code", {}, alt.token)),
    element("td", {}, pct(prob(alt))),
    element("td", {}, OUTCOMES[alt.outcome] || alt.outcome),
    element("td", {}, alt.answer ?? "—"),
    element("td", {}, element("button", { type: "button", class: "link",
      onclick: (event) => compare(point, alt, event.currentTarget) }, `Why “${point.token}” over “${alt.token}”?`))));
  $("alternatives").tBodies[0].replaceChildren(...rows);
  $("decision").hidden = false;
}

async function compare(point, alt, button) {
  await busy(button, async () => {
    const result = await postJSON("/v1/compare", { report_id: state.reportId, position: point.position,
                                                   alternative: alt.token_id, depth: depth() });
    state.comparison = result.texts;
    $("comparison").hidden = false;
    showTexts();
  });
}

// --- what if, simpler way ----------------------------------------------------------------------------------------

function showDiff(result) {
  const cf = result.counterfactual;
  state.diff = result.texts;
  const steps = cf.steps.map((s) => element("li", { class: s.change },
    s.change === "same" ? s.after : s.change === "removed" ? s.before
      : s.change === "added" ? `(new) ${s.after}` : `${s.before} → ${s.after}`));
  const points = cf.decision_points.filter((d) => d.change !== "kept").map((d) =>
    element("li", { class: d.change }, `${d.change}: “${d.token}”` + (d.step === null ? "" : ` in step ${d.step + 1}`)));
  $("diff").replaceChildren(
    element("p", { class: cf.answer_changed ? "changed" : "same" },
      cf.answer_changed ? `Answer changed: ${cf.answer_before ?? "none"} → ${cf.answer_after ?? "none"}`
        : `Answer unchanged: ${cf.answer_after ?? "none"}`),
    element("h3", {}, "Steps"), element("ol", { id: "diff-steps" }, ...steps),
    element("h3", {}, "Decision points"),
    points.length ? element("ul", {}, ...points) : element("p", { class: "muted" }, "none appeared or vanished"),
    element("div", { id: "diff-text", class: "explanation" }),
    element("button", { type: "button", onclick: () => openReport(result.new_report_id) },
            "Open the edited question's report"));
  $("diff").hidden = false;
  showTexts();
}

function showSimpler(result) {
  state.simpler = result.texts;
  const children = [element("div", { id: "simpler-text", class: "explanation" })];
  if (result.new_report_id) {
    children.push(element("button", { type: "button", onclick: () => openReport(result.new_report_id) },
                          "Open the simpler chain's report"));
  }
  $("simpler").replaceChildren(...children);
  $("simpler").hidden = false;
  showTexts();
}

async function openReport(id) {
  const result = await getJSON(`/v1/reports/${id}?depth=${depth()}`);
  state.diff = state.simpler = null;
  $("diff").hidden = $("simpler").hidden = true;
  $("question").value = result.report.question;
  showReport(result.id, result.report, result.texts);
  $("chain-heading").scrollIntoView();
}

// --- wiring ------------------------------------------------------------------------------------------------------

$("ask-form").addEventListener("submit", (event) => {
  event.preventDefault();
  busy($("explain-button"), async () => {
    const body = { question: $("question").value, depth: depth(), threshold: Number($("threshold").value) };
    const result = await streamPost("/v1/explain/stream", body, showProgress);
    showReport(result.id, result.report, result.texts);
  });
});

$("whatif-form").addEventListener("submit", (event) => {
  event.preventDefault();
  busy($("whatif-button"), async () => {
    showDiff(await streamPost("/v1/counterfactual/stream",
      { report_id: state.reportId, question: $("whatif-question").value, depth: depth() }, showProgress));
  });
});

$("simpler-form").addEventListener("submit", (event) => {
  event.preventDefault();
  busy($("simpler-button"), async () => {
    showSimpler(await streamPost("/v1/simplify/stream", { report_id: state.reportId, depth: depth(),
      n: Number($("simpler-n").value), temperature: Number($("simpler-temperature").value) }, showProgress));
  });
});

for (const radio of document.querySelectorAll("input[name=depth]")) radio.addEventListener("change", showTexts);

getJSON("/v1/model").then((info) => {
  const size = info.parameters >= 1e6 ? `${(info.parameters / 1e6).toFixed(1)} M` : `${info.parameters}`;
  $("model-info").textContent = `Model: ${info.source} · ${info.architecture} · ${size} parameters` +
    (info.trained ? "" : " · untrained (random weights)") +
    (info.calibration_temperature ? " · answer confidence calibrated" : "");
}).catch(showError);
