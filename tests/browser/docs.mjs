// The API docs page (/docs, Swagger UI) in headless Chromium under the
// Content-Security-Policy Orrery sends with it: the page must render every
// operation of the OpenAPI document, with no CSP violation and no error.
//
// Env: ORRERY_URL, ORRERY_SCREENSHOTS (optional).
// Prints one JSON line: the CSP header, the operations shown, the
// violations and errors seen.

import { check, launchBrowser, openPage, orreryUrl, runScenario } from './harness.mjs';

const ORRERY = orreryUrl();

runScenario(async (cleanup) => {
  const browser = await launchBrowser();
  cleanup(() => browser.close());
  const page = await openPage(browser, `${ORRERY}/docs`, {
    name: 'docs',
    init: () => {
      window.__violations = [];
      document.addEventListener('securitypolicyviolation', (e) =>
        window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`),
      );
    },
  });
  cleanup(() => page.close({ runBeforeUnload: false }));
  const response = await page.page.request.get(`${ORRERY}/docs`);
  const csp = response.headers()['content-security-policy'] ?? null;
  await page.page.waitForSelector('.swagger-ui .opblock', { timeout: 30000 });
  const operations = await page.evaluate(() => document.querySelectorAll('.swagger-ui .opblock').length);
  // Open one operation, as a reader would.
  await page.page.click('.swagger-ui .opblock-summary');
  await page.page.waitForSelector('.swagger-ui .opblock-body', { timeout: 10000 });
  const violations = await page.evaluate(() => window.__violations);
  // The browser asks for /favicon.ico by itself; Orrery has none (404).
  const errors = page.errors().filter((e) => !e.includes('/favicon.ico'));
  await page.screenshot('docs');
  const summary = { csp, operations, violations, errors };
  check(violations.length === 0, `CSP violations: ${violations.join('; ')}`);
  check(errors.length === 0, `errors: ${errors.join('; ')}`);
  return summary;
});
