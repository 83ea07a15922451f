// Drives the Skald web console in headless Chromium, as an operator would.
//
//   node console.mjs <base url> <operator token> <screenshot dir>
//
// Signs in, opens the overview, the stuck inbox and the saga list, filters the
// list (status=parked, then status=running), opens a running saga, aborts it
// with a reason through the repair form (htmx), and checks that the page shows
// the result. Saves a PNG of every page into the screenshot dir. Fails (exit 1,
// with a message saying what was expected) on any error, on a JavaScript error
// or CSP violation in the page, and on any request to another origin.
//
// The expected data (made by tests/tests/console.rs): at least one parked saga
// and at least one running saga whose first step is never answered.
//
// Chromium: $CHROMIUM, else /usr/bin/chromium (Debian's `chromium` package).
// playwright-core downloads no browser.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [base, token, shots] = process.argv.slice(2);
if (!base || !token || !shots) {
  console.error('usage: node console.mjs <base url> <operator token> <screenshot dir>');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const origin = new URL(base).origin;

/** Throw with `message` unless `ok`. */
function check(ok, message) {
  if (!ok) throw new Error(message);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
  });
  const problems = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
    page.on('pageerror', (e) => problems.push(`JavaScript error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    });
    page.on('request', (r) => {
      const url = r.url();
      if (!url.startsWith(origin) && !url.startsWith('data:')) {
        problems.push(`request to another origin: ${url}`);
      }
    });
    const shot = async (name) => {
      await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
      console.log(`ok: ${name} (${page.url()})`);
    };
    const heading = async () => (await page.locator('h1').first().innerText()).trim();

    // Not signed in: the console sends us to the login page.
    await page.goto(`${base}/console`);
    check(page.url().includes('/console/login'), `expected the login page, got ${page.url()}`);
    await shot('01-login');

    // A wrong token is refused on the page (answered 401, which Chromium logs
    // as a failed load: that one error is expected).
    check(problems.length === 0, problems.join('\n'));
    await page.fill('#token', 'not-a-token');
    await page.click('#login-form button[type=submit]');
    await page.locator('.notice.error').waitFor();
    check(page.url().includes('/console/login'), 'a wrong token must not sign in');
    const unexpected = problems.filter((p) => !/status of 401/.test(p));
    check(unexpected.length === 0, unexpected.join('\n'));
    problems.length = 0;

    // Sign in: back to the overview.
    await page.fill('#token', token);
    await Promise.all([page.waitForURL(/\/console$/), page.click('#login-form button[type=submit]')]);
    check((await heading()) === 'Overview', `expected the overview, got "${await heading()}"`);
    const total = Number(await page.locator('#total').innerText());
    check(total >= 2, `the overview counts ${total} sagas; expected at least 2`);
    check(await page.locator('#by-type tbody tr').count() >= 1, 'the overview has no saga type row');
    const stuckTotal = Number(await page.locator('#stuck-total').innerText());
    check(stuckTotal >= 1, `the overview counts ${stuckTotal} stuck sagas; expected at least 1 (parked)`);
    await shot('02-overview');

    // The stuck inbox lists the parked saga with its class and why.
    await Promise.all([page.waitForURL(/\/console\/stuck/), page.click('nav >> text=Stuck')]);
    check((await heading()) === 'Stuck sagas', `expected the stuck inbox, got "${await heading()}"`);
    const stuckRows = page.locator('#saga-list tbody tr');
    check(await stuckRows.count() >= 1, 'the stuck inbox is empty; expected the parked saga');
    const tags = await page.locator('#saga-list .stuck .tag').allInnerTexts();
    check(tags.includes('parked'), `the stuck inbox shows classes [${tags}]; expected "parked"`);
    await shot('03-stuck');

    // The list, then the filter form: parked sagas only.
    await Promise.all([page.waitForURL(/\/console\/sagas/), page.click('nav >> text=Sagas')]);
    check((await heading()) === 'Sagas', `expected the saga list, got "${await heading()}"`);
    const all = await page.locator('#saga-list tbody tr').count();
    check(all === total, `the list shows ${all} sagas; the overview counted ${total}`);
    await shot('04-list');

    await page.selectOption('#filter-form select[name=status]', 'parked');
    await Promise.all([page.waitForURL(/status=parked/), page.click('#filter-form button[type=submit]')]);
    let statuses = await page.locator('#saga-list tbody .status').allInnerTexts();
    check(statuses.length >= 1, 'filtering by status=parked shows no saga');
    check(statuses.every((s) => s === 'parked'), `filtering by status=parked shows [${statuses}]`);
    check(statuses.length < all, 'the filter did not narrow the list');
    await shot('05-list-parked');

    // Running sagas; open the first.
    await page.selectOption('#filter-form select[name=status]', 'running');
    await Promise.all([page.waitForURL(/status=running/), page.click('#filter-form button[type=submit]')]);
    statuses = await page.locator('#saga-list tbody .status').allInnerTexts();
    check(statuses.length >= 1 && statuses.every((s) => s === 'running'), `status=running shows [${statuses}]`);
    const link = page.locator('#saga-list tbody a.mono').first();
    const sagaId = (await link.innerText()).trim();
    await Promise.all([page.waitForURL(new RegExp(`/console/sagas/${sagaId}$`)), link.click()]);

    // The saga page: summary, steps, timeline, commands.
    check((await page.locator('#saga-status').innerText()) === 'running', 'the saga page does not say running');
    check(await page.locator('#steps tbody tr').count() >= 1, 'the saga page has no step table');
    const events = await page.locator('#timeline li').count();
    check(events >= 2, `the timeline has ${events} events; expected saga_started and command_sent`);
    check(await page.locator('#commands tbody tr').count() >= 1, 'no command is listed');
    const input = await page.locator('#saga-input').textContent();
    check(input.includes('<script>'), 'the saga input is not shown as text');
    check(await page.evaluate(() => window.pwned) === undefined, 'a script in the saga input ran');
    await shot('06-saga');

    // Abort it through the repair form (htmx swaps in the result).
    await page.fill('#reason', 'browser test: customer cancelled');
    await page.click('#repair-form button[value=abort]');
    const notice = page.locator('#repair-notice');
    await notice.waitFor();
    const said = await notice.innerText();
    check(/abort done: the saga is now (compensating|compensated)/.test(said), `the repair answered "${said}"`);
    check(page.url().endsWith(`/console/sagas/${sagaId}`), 'the repair left the saga page');
    const swapped = await page.locator('#saga-status').innerText();
    check(['compensating', 'compensated'].includes(swapped), `the heading still says ${swapped}`);
    await shot('07-saga-repaired');

    // Reloaded, the saga shows the abort in its status and timeline.
    await Promise.all([page.waitForLoadState('load'), page.click('#reload')]);
    const status = await page.locator('#saga-status').innerText();
    check(['compensating', 'compensated'].includes(status), `after the abort the saga is ${status}`);
    const timeline = await page.locator('#timeline').innerText();
    check(timeline.includes('compensation_started'), 'the timeline does not show compensation_started');
    check(await page.locator('#timeline li').count() > events, 'the timeline did not grow');
    await shot('08-saga-after');

    check(problems.length === 0, problems.join('\n'));
    console.log(`console browser test passed (saga ${sagaId} aborted)`);
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(`console browser test FAILED: ${e.message}`);
  process.exit(1);
});
