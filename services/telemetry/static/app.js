// HAMi's read-only page: draws /api/view (services/telemetry/view.py) every 2 s. No build step.
"use strict";

const REFRESH_MS = 2000;
const MIB = 1024 * 1024;
const PALETTE = ["#1f6feb", "#a371f7", "#3fb950", "#d29922", "#db61a2", "#39c5cf", "#f0883e", "#8957e5"];
const colours = new Map();

function colour(allocation) {
  if (!colours.has(allocation)) colours.set(allocation, PALETTE[colours.size % PALETTE.length]);
  return colours.get(allocation);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("data-") || k === "title" || k === "href" || k === "target" || k === "rel") node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function gib(mib) { return (mib / 1024).toFixed(mib >= 10240 ? 0 : 1) + " GiB"; }
function bytes(b) {
  if (b === null || b === undefined) return "–";
  if (b >= 1024 * MIB) return (b / 1024 / MIB).toFixed(1) + " GiB";
  return (b / MIB).toFixed(0) + " MiB";
}
function pct(x) { return x === null || x === undefined ? "–" : x.toFixed(0) + "%"; }
function ago(seconds) {
  if (seconds < 60) return seconds.toFixed(0) + " s";
  if (seconds < 3600) return (seconds / 60).toFixed(0) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}
function holderName(share) {
  const h = share.holder;
  return h.kind === "pod" ? h.name : (h.name || share.allocation_id.slice(0, 8));
}

function memoryBar(device) {
  const bar = el("div", { class: "bar memory", role: "img", "title": "memory granted per job; the dark part is what the job uses" });
  for (const share of device.shares) {
    const width = device.memory_mib ? (100 * share.memory_mib) / device.memory_mib : 0;
    const usage = share.usage;
    const usedFraction = usage && usage.limit_bytes ? Math.min(1, usage.used_bytes / usage.limit_bytes) : 0;
    const segment = el(
      "div",
      {
        class: "share",
        "data-allocation": share.allocation_id,
        "data-holder": holderName(share),
        "data-memory-mib": String(share.memory_mib),
        "data-cores": String(share.cores),
        style: `width:${width}%;background:${colour(share.allocation_id)}`,
        title: `${holderName(share)}: ${gib(share.memory_mib)}, ${share.cores}% cores` +
          (usage ? `; uses ${bytes(usage.used_bytes)} of ${bytes(usage.limit_bytes)}` : ""),
      },
      el("div", { class: "used", style: `width:${(100 * usedFraction).toFixed(1)}%` }),
      el("span", { class: "name" }, holderName(share)),
    );
    bar.append(segment);
  }
  return bar;
}

function coresBar(device) {
  const bar = el("div", { class: "bar cores", role: "img", "title": "compute granted per job" });
  for (const share of device.shares) {
    const width = device.cores ? (100 * share.cores) / device.cores : 0;
    bar.append(el("div", { class: "share", style: `width:${width}%;background:${colour(share.allocation_id)}` }));
  }
  return bar;
}

function sharesTable(device) {
  if (!device.shares.length) return el("p", { class: "empty" }, "no jobs on this GPU");
  const rows = device.shares.map((share) => {
    const usage = share.usage;
    const over = usage && usage.limit_bytes && usage.used_bytes > usage.limit_bytes;
    return el(
      "tr",
      { "data-allocation": share.allocation_id },
      el(
        "td",
        {},
        el("span", { class: "swatch", style: `background:${colour(share.allocation_id)}` }),
        holderName(share),
        share.profile ? el("span", { class: "badge" }, share.profile) : null,
      ),
      el("td", {}, gib(share.memory_mib)),
      el("td", { class: over ? "over" : "" }, usage ? bytes(usage.used_bytes) : "–"),
      el("td", {}, share.cores + "%"),
      el("td", {}, usage ? pct(usage.utilization_percent) : "–"),
      el("td", {}, share.trace_url ? el("a", { href: share.trace_url, target: "_blank", rel: "noopener" }, "trace") : ""),
    );
  });
  return el(
    "table",
    { class: "shares" },
    el("thead", {}, el("tr", {}, ...["job", "memory granted", "memory used", "cores", "GPU time", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows),
  );
}

function gpu(node, device) {
  const badges = [];
  if (device.simulated) badges.push(el("span", { class: "badge" }, "simulated"));
  if (device.isolation && device.isolation !== "interception") badges.push(el("span", { class: "badge" }, device.isolation));
  if (!device.healthy) badges.push(el("span", { class: "badge bad" }, "unhealthy"));
  return el(
    "section",
    { class: "gpu", "data-uuid": device.uuid, "data-node": node.name, "data-index": String(device.index) },
    el(
      "div",
      { class: "gpu-head" },
      el("span", { class: "model" }, `GPU ${device.index} · ${device.model}`),
      el("span", { class: "uuid" }, device.uuid),
      ...badges,
      el(
        "span",
        { class: "totals" },
        `${gib(device.allocated_memory_mib)} of ${gib(device.memory_mib)} granted · ` +
          `${device.allocated_cores}% of ${device.cores}% cores · ${device.shares.length}/${device.split_count} jobs` +
          (device.utilization_percent !== null ? ` · busy ${pct(device.utilization_percent)}` : ""),
      ),
    ),
    el("div", { class: "bar-label" }, "memory"),
    memoryBar(device),
    el("div", { class: "bar-label" }, "compute"),
    coresBar(device),
    sharesTable(device),
  );
}

function render(data) {
  const nodes = document.getElementById("nodes");
  const devices = data.nodes.flatMap((n) => n.devices);
  const jobs = new Set(devices.flatMap((d) => d.shares.map((s) => s.allocation_id)));
  const granted = devices.reduce((a, d) => a + d.allocated_memory_mib, 0);
  const total = devices.reduce((a, d) => a + d.memory_mib, 0);
  document.getElementById("summary").replaceChildren(
    el("div", { class: "stat" }, el("b", {}, data.nodes.length), el("span", {}, "nodes")),
    el("div", { class: "stat" }, el("b", {}, devices.length), el("span", {}, "GPUs")),
    el("div", { class: "stat" }, el("b", { id: "job-count" }, jobs.size), el("span", {}, "jobs placed")),
    el("div", { class: "stat" }, el("b", {}, total ? pct((100 * granted) / total) : "–"), el("span", {}, "memory granted")),
    el("div", { class: "stat" }, el("b", {}, data.waiting.length), el("span", {}, "waiting")),
  );
  nodes.replaceChildren(
    ...(data.nodes.length
      ? data.nodes.map((node) =>
          el(
            "article",
            { class: "node", "data-node": node.name },
            el("h2", {}, node.name, el("small", {}, node.driver_version ? `driver ${node.driver_version}` : "")),
            ...node.devices.map((device) => gpu(node, device)),
          ),
        )
      : [el("p", { class: "empty" }, "no node has published its devices yet")]),
  );
  const waiting = document.getElementById("waiting");
  waiting.replaceChildren(
    ...(data.waiting.length
      ? [
          el("h2", {}, `Waiting (${data.waiting.length})`),
          el(
            "ul",
            {},
            ...data.waiting.map((w) =>
              el("li", { "data-request": w.request_id }, el("b", {}, w.holder || w.request_id), ` for ${ago(w.waiting_s)}: `, el("span", { class: "reason" }, w.reason)),
            ),
          ),
        ]
      : []),
  );
  document.getElementById("problems").replaceChildren(
    ...(data.problems.length ? [el("h2", {}, "Problems"), el("ul", {}, ...data.problems.map((p) => el("li", {}, p)))] : []),
  );
  document.getElementById("updated").textContent = "updated " + new Date(data.generated_at * 1000).toLocaleTimeString();
  document.body.dataset.ready = "true";
}

async function refresh() {
  const error = document.getElementById("error");
  try {
    const reply = await fetch("/api/view", { cache: "no-store" });
    if (!reply.ok) throw new Error(`telemetry answered ${reply.status}`);
    render(await reply.json());
    error.hidden = true;
  } catch (e) {
    error.textContent = `cannot read the cluster (${e.message}); retrying`;
    error.hidden = false;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
