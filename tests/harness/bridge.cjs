// A small line protocol that lets pytest drive one headless Chromium page through playwright-core.
//   node bridge.cjs USER_DATA_DIR     (NODE_PATH must contain playwright-core; CHROMIUM names the binary)
// stdin: one JSON request per line, {id, op, ...}; stdout: one JSON reply per line, {id, ok, value | error}.
// Ops: goto {url}, eval {js, arg} (js is a function's source, called with arg and awaited), wait {js, arg,
// timeout_ms}, click {selector, timeout_ms}, press {key} (a key or chord on the keyboard, e.g. "Control+z"),
// screenshot {path}, viewport {width, height} (the window's size), events {} (console errors and warnings, page
// errors and failed requests since the last call), close {}.
"use strict";
const readline = require("readline");
const { chromium } = require("playwright-core");

const TIMEOUT = Number(process.env.BRIDGE_TIMEOUT_MS || 60000);
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"];

async function main() {
  const userDataDir = process.argv[2];
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: FLAGS,
    viewport: { width: 1400, height: 900 },
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  let events = [];
  page.on("pageerror", (e) => events.push({ kind: "pageerror", text: String(e) }));
  page.on("console", (m) => {
    if (m.type() === "error") events.push({ kind: "console", text: m.text() });
    if (m.type() === "warning") events.push({ kind: "warning", text: m.text() });
  });
  page.on("requestfailed", (r) => events.push({ kind: "requestfailed", text: r.url() }));
  page.on("response", (r) => { if (r.status() >= 400) events.push({ kind: "http", text: `${r.status()} ${r.url()}` }); });

  const call = (js, arg) => `(${js})(${JSON.stringify(arg ?? null)})`;
  const ops = {
    goto: async (r) => { await page.goto(r.url, { waitUntil: "domcontentloaded" }); return page.title(); },
    eval: async (r) => page.evaluate(call(r.js, r.arg)),
    wait: async (r) => {
      const handle = await page.waitForFunction(call(r.js, r.arg), null, { timeout: r.timeout_ms ?? TIMEOUT,
                                                                           polling: 100 });
      return handle.jsonValue();
    },
    click: async (r) => { await page.click(r.selector, { timeout: r.timeout_ms ?? TIMEOUT }); return true; },
    press: async (r) => { await page.keyboard.press(r.key); return true; },
    screenshot: async (r) => { await page.screenshot({ path: r.path }); return r.path; },
    viewport: async (r) => { await page.setViewportSize({ width: r.width, height: r.height }); return true; },
    events: async () => { const out = events; events = []; return out; },
    close: async () => { await context.close(); return true; },
  };

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const request = JSON.parse(line);
    let reply;
    try {
      const op = ops[request.op];
      if (!op) throw new Error(`unknown op ${request.op}`);
      reply = { id: request.id, ok: true, value: (await op(request)) ?? null };
    } catch (e) {
      reply = { id: request.id, ok: false, error: String(e && e.stack ? e.stack : e) };
    }
    process.stdout.write(JSON.stringify(reply) + "\n");
    if (request.op === "close") break;
  }
  await context.close().catch(() => {});
}

main().then(() => process.exit(0), (e) => { console.error("bridge failed:", e); process.exit(1); });
