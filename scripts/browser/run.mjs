import { chromium } from 'playwright-core';
const [pageUrl] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
const page = await browser.newPage();
page.on('console', m => console.error('console:', m.text()));
await page.goto(pageUrl);
const deadline = Date.now() + 20000;
let last = '';
while (Date.now() < deadline) {
  const r = await page.evaluate(() => JSON.stringify(window.results));
  if (r !== last) { console.log(r); last = r; }
  if (JSON.parse(r).control) break;
  await new Promise(res => setTimeout(res, 100));
}
await browser.close();
