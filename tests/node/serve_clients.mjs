// Real clients against a running `rwkv-lite serve` (started by tests/cli/serve_clients.sh):
//  1. the official openai package: completion, chat, both streamed, equal to the CLI's greedy text;
//  2. time to first token of a chat whose 2,000-token system prompt is in the prefix-state cache, against the
//     first request that had to process it (>= 20x sooner);
//  3. hostile clients: malformed JSON, a 100 MB body, 200 idle connections, a client leaving mid-stream;
//  4. a load test (autocannon): 32 concurrent streaming clients, zero errors, peak RSS within 10 % of its value
//     after the first 5 s.
// usage: node serve_clients.mjs PORT PROMPT EXPECT_GEN_FILE QUESTION EXPECT_CHAT_FILE SYSTEM_FILE LOAD_SECONDS [no-rss]
// (no-rss: sanitizer builds, whose allocator keeps freed memory in quarantine, skip the RSS check)
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import OpenAI from "openai";
import autocannon from "autocannon";

const [port, prompt, genFile, question, chatFile, systemFile, loadSecondsArg, rssMode] = process.argv.slice(2);
const base = `http://127.0.0.1:${port}`;
const loadSeconds = Number(loadSecondsArg);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "unused", maxRetries: 0, timeout: 120000 });
let failures = 0;
const check = (ok, what, detail = "") => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}${detail ? ": " + detail : ""}`);
  if (!ok) failures++;
};
const metrics = async () => {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = {};
  for (const line of text.split("\n")) {
    const [k, v] = line.split(" ");
    if (k && !k.startsWith("#")) m[k.replace(/^rwkvl_/, "")] = Number(v);
  }
  return m;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- 1. the openai package, greedy, equal to the CLI
const wantGen = fs.readFileSync(genFile, "utf8");
const wantChat = fs.readFileSync(chatFile, "utf8").trim();
const model = (await client.models.list()).data[0].id;
check(Boolean(model), "GET /v1/models through the client", model);
const greedy = { temperature: 0, max_tokens: 24 };
const c1 = await client.completions.create({ model, prompt, ...greedy });
check(c1.choices[0].text === wantGen, "completion equals `rwkv-lite generate --temp 0`", JSON.stringify(c1.choices[0].text));
check(c1.usage.completion_tokens === 24 && c1.usage.prompt_tokens > 0, "completion usage", JSON.stringify(c1.usage));
let streamed = "";
for await (const chunk of await client.completions.create({ model, prompt, ...greedy, stream: true }))
  streamed += chunk.choices[0]?.text ?? "";
check(streamed === wantGen, "streamed completion equals it", JSON.stringify(streamed));
const chatReq = { model, messages: [{ role: "user", content: question }], temperature: 0, presence_penalty: 0,
                  frequency_penalty: 0, max_tokens: 40 };
const ch = await client.chat.completions.create(chatReq);
check(ch.choices[0].message.content === wantChat, "chat equals `rwkv-lite chat --temp 0`", JSON.stringify(ch.choices[0].message.content));
check(ch.choices[0].finish_reason === "stop", "chat reply ends at the blank line", ch.choices[0].finish_reason);
let chatStreamed = "";
for await (const chunk of await client.chat.completions.create({ ...chatReq, stream: true }))
  chatStreamed += chunk.choices[0]?.delta?.content ?? "";
check(chatStreamed === wantChat, "streamed chat equals it", JSON.stringify(chatStreamed));

// ---- 2. a long system prompt, then the same system prompt again: time to first token
const system = fs.readFileSync(systemFile, "utf8");
const firstToken = async (userText) => {
  const t0 = performance.now();
  const stream = await client.chat.completions.create({
    model, stream: true, max_tokens: 8, temperature: 0,
    messages: [{ role: "system", content: system }, { role: "user", content: userText }],
    stream_options: { include_usage: true },
  });
  let ttft = null, usage = null;
  for await (const chunk of stream) {
    if (ttft === null && chunk.choices[0]?.delta?.content) ttft = performance.now() - t0;
    if (chunk.usage) usage = chunk.usage;
  }
  return { ttft: ttft ?? performance.now() - t0, usage };
};
const cold = await firstToken("Summarise the text above.");
const warm = await firstToken("What is the text above about?");
check(cold.usage.prompt_tokens >= 2000, "the system prompt has 2,000 tokens or more", String(cold.usage.prompt_tokens));
check(warm.usage.prompt_tokens_details.cached_tokens >= 2000, "the second request resumed it from the cache",
      String(warm.usage.prompt_tokens_details.cached_tokens));
const ratio = cold.ttft / warm.ttft;
check(ratio >= 20, "time to first token with the cached system prompt is >= 20x sooner",
      `${cold.ttft.toFixed(1)} ms -> ${warm.ttft.toFixed(1)} ms (${ratio.toFixed(1)}x)`);

// ---- 3. hostile clients
const bad = await fetch(`${base}/v1/chat/completions`, { method: "POST", body: "{\"messages\": [", headers: { "Content-Type": "application/json" } });
check(bad.status === 400, "malformed JSON gets 400", String(bad.status));
const bigBody = await new Promise((resolve) => {
  const req = http.request(`${base}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json", "Content-Length": 100e6 } });
  req.on("response", (res) => { res.resume(); resolve(`status ${res.statusCode}`); });
  req.on("error", (e) => resolve(`dropped (${e.code})`));
  const mb = Buffer.alloc(1 << 20, 32);
  let sent = 0;
  const pump = () => { while (sent < 100 && req.write(mb)) sent++; if (sent < 100) req.once("drain", () => { sent++; pump(); }); else req.end(); };
  pump();
});
check(bigBody === "status 413" || bigBody.startsWith("dropped"), "a 100 MB body is refused", bigBody);
const idle = [];
for (let i = 0; i < 200; i++) idle.push(net.connect(Number(port), "127.0.0.1"));
await sleep(300);
const t0 = performance.now();
const during = await client.completions.create({ model, prompt, max_tokens: 4, temperature: 0 });
const served = performance.now() - t0;
check(during.choices[0].text.length > 0 && served < 3000, "served while 200 idle connections are open", `${served.toFixed(0)} ms`);
for (const s of idle) s.destroy();
await new Promise((resolve) => {
  const req = http.request(`${base}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" } });
  req.on("response", (res) => res.once("data", () => { req.destroy(); resolve(); }));
  req.on("error", () => resolve());
  req.end(JSON.stringify({ prompt, max_tokens: 100000, stream: true }));
});
let busy = 1;
for (let i = 0; i < 200 && busy > 0; i++) { await sleep(50); busy = (await metrics()).slots_busy; }
check(busy === 0, "a client that leaves mid-stream frees its slot");

// ---- 4. load: 32 concurrent streaming clients
const body = JSON.stringify({ prompt, max_tokens: 16, temperature: 0.8, stream: true });
let rssAt5 = 0;
setTimeout(async () => { rssAt5 = (await metrics()).peak_rss_bytes; }, 5000);
const result = await autocannon({
  url: `${base}/v1/completions`, method: "POST", body, headers: { "Content-Type": "application/json" },
  connections: 32, duration: loadSeconds, timeout: 60,
});
const after = await metrics();
const errors = result.errors + result.timeouts + result.non2xx;
check(errors === 0 && result.requests.total > 0, "load test: no errors",
      `${result.requests.total} requests, ${result.errors} errors, ${result.timeouts} timeouts, ${result.non2xx} non-2xx`);
const rssText = `${(rssAt5 / 2 ** 20).toFixed(1)} MiB at 5 s, ${(after.peak_rss_bytes / 2 ** 20).toFixed(1)} MiB at the end`;
if (rssMode === "no-rss") console.log(`skip load test RSS check (sanitizer build): ${rssText}`);
else check(rssAt5 > 0 && after.peak_rss_bytes <= rssAt5 * 1.10, "load test: peak RSS within 10 % of its value after 5 s", rssText);
console.log(`load: ${result.requests.total} requests in ${loadSeconds} s (${result.requests.average.toFixed(1)}/s), ` +
            `latency p50 ${result.latency.p50} ms p99 ${result.latency.p99} ms, ${after.tokens_generated_total} tokens generated`);
const health = await fetch(`${base}/health`);
check(health.status === 200, "still healthy after all of it");
process.exit(failures ? 1 : 0);
