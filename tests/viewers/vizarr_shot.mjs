// Open pages in headless Chromium (puppeteer-core, WebGL through SwiftShader), take a
// screenshot of each and report console errors, failed or off-machine requests and the
// page text, as JSON on stdout.
// Usage: node vizarr_shot.mjs MODULES_DIR URL=PNG ...
import { createRequire } from "node:module";

const [modules, ...pairs] = process.argv.slice(2);
const require = createRequire(`${modules}/`);
const puppeteer = require("puppeteer-core");

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--window-size=800,600",
  ],
});
const results = [];
try {
  for (const pair of pairs) {
    const cut = pair.lastIndexOf("=");
    const url = pair.slice(0, cut);
    const shot = pair.slice(cut + 1);
    const page = await browser.newPage();
    await page.setViewport({ width: 800, height: 600 });
    const origin = new URL(url).origin;
    const result = { url, shot, console_errors: [], page_errors: [], blocked: [], failed: [] };
    await page.setRequestInterception(true);
    page.on("request", (request) => {
      const target = request.url();
      // Nothing may come from anywhere but the local server.
      if (target.startsWith(origin) || target.startsWith("data:") || target.startsWith("blob:")) {
        request.continue();
      } else {
        result.blocked.push(target);
        request.abort();
      }
    });
    page.on("console", (message) => {
      if (message.type() === "error") {
        result.console_errors.push({ text: message.text(), url: message.location().url || "" });
      }
    });
    page.on("pageerror", (error) => result.page_errors.push(String(error)));
    page.on("requestfailed", (request) => result.failed.push(request.url()));
    page.on("response", (response) => {
      if (response.status() >= 400) result.failed.push(`${response.status()} ${response.url()}`);
    });
    await page.goto(url, { waitUntil: "networkidle0", timeout: 60000 });
    // Wait for the image's canvas or an error message; an error page has no canvas.
    await page.waitForFunction(
      () => document.querySelector("canvas") || document.body.innerText.includes("Error"),
      { timeout: 30000 },
    );
    result.canvas = (await page.$("canvas")) !== null;
    // Let the tiles arrive and the WebGL canvas render: network idle, a pause, two frames.
    await page.waitForNetworkIdle({ idleTime: 1000, timeout: 60000 });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await page.evaluate(
      () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))),
    );
    await page.screenshot({ path: shot });
    result.text = await page.evaluate(() => document.body.innerText);
    results.push(result);
    await page.close();
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(results, null, 1));
